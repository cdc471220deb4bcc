"""The DICOM objects lesionseg writes, made from a real picture and the real model's answer: read back, the
Segmentation is the mask and the Parametric Map the uncertainty, both say what they are and whose they are, and
dciodvfy finds no error in either, whatever kind of picture they came from."""

import io

import cv2
import highdicom
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from tests.dicom.pictures import (
    DERMOSCOPIC_PHOTOGRAPHY,
    PATIENT_ID,
    PATIENT_NAME,
    SECONDARY_CAPTURE,
    VL_PHOTOGRAPHIC,
    wrap_rgb,
)
from tests.dicom.validation import dciodvfy_messages, errors_among

import lesionseg
from lesionseg.dicom.objects import parametric_map, segmentation, to_bytes

SOP_CLASSES = [VL_PHOTOGRAPHIC, DERMOSCOPIC_PHOTOGRAPHY, SECONDARY_CAPTURE]
# For the tests that need no prediction: the shipped model's identification, as a Result gives it.
MODEL = {"name": "efficientnet_lite0_upernet", "version": "0.5.0"}
THRESHOLD = {"threshold": "0.5"}
# Levels are round(std × 65535 / 0.5), computed in float32: half a step of rounding, plus the float32 rounding
# of the product and of the added 0.5 (each at most half an ulp, 2^-9 of a level below 2^16).
UNCERTAINTY_TOLERANCE = 0.5 / 65535 * (0.5 + 2 * 2**-9)


@pytest.fixture(scope="module")
def lesion_rgb(real_image_path) -> np.ndarray:
    """A real dermoscopic picture, 600×450."""
    bgr = cv2.resize(cv2.imread(str(real_image_path)), (600, 450), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def result(lesion_rgb) -> lesionseg.Result:
    return lesionseg.load().predict(lesion_rgb, seed=0)


def source_of(rgb: np.ndarray, sop_class: str = VL_PHOTOGRAPHIC) -> Dataset:
    """The picture as a hospital sends it, read back as the reader keeps it: the header, without its pixels."""
    source = pydicom.dcmread(io.BytesIO(wrap_rgb(rgb, sop_class=sop_class)))
    del source.PixelData
    return source


def model_of(result: lesionseg.Result) -> dict[str, str]:
    return {"name": result.model["name"], "version": result.model["version"]}


def threshold_of(result: lesionseg.Result) -> dict[str, str]:
    return {"threshold": str(result.prediction.threshold)}


def read_back(dataset: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(to_bytes(dataset)))


def assert_valid(dataset: Dataset, tmp_path) -> None:
    messages = dciodvfy_messages(to_bytes(dataset), tmp_path)
    assert not errors_among(messages), "dciodvfy:\n" + "\n".join(messages)


def real_world_value_mapping(dataset: Dataset) -> Dataset:
    """The mapping of the map's one frame, shared by all frames or its own."""
    for groups in (dataset.SharedFunctionalGroupsSequence[0], dataset.PerFrameFunctionalGroupsSequence[0]):
        if "RealWorldValueMappingSequence" in groups:
            return groups.RealWorldValueMappingSequence[0]
    raise AssertionError("the map has no real-world value mapping")


@pytest.mark.slow
def test_the_segmentation_reads_back_as_the_mask_of_its_source(lesion_rgb, result):
    source = source_of(lesion_rgb)
    written = segmentation(source, result.mask, model_of(result), threshold_of(result))
    seg = highdicom.seg.segread(io.BytesIO(to_bytes(written)))
    # Fetched by the source's SOP Instance UID: only a frame that references the source comes back.
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])
    np.testing.assert_array_equal(pixels[0, :, :, 0].astype(bool), result.mask)
    assert (source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID) in seg.get_source_image_uids()
    assert (seg.Rows, seg.Columns, seg.NumberOfFrames) == (source.Rows, source.Columns, 1)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert (seg.PatientID, str(seg.PatientName)) == (PATIENT_ID, PATIENT_NAME)
    assert seg.SeriesDescription == "lesionseg segmentation"
    assert "FrameOfReferenceUID" not in seg


@pytest.mark.slow
def test_the_segmentation_names_the_lesion_and_lesionseg(lesion_rgb, result):
    seg = read_back(segmentation(source_of(lesion_rgb), result.mask, model_of(result), {"coverage": "0.9"}))
    segment = seg.SegmentSequence[0]
    assert (segment.SegmentedPropertyTypeCodeSequence[0].CodeValue, segment.SegmentLabel) == ("52988006", "Lesion")
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == f"lesionseg {result.model['name']}"
    assert algorithm.AlgorithmVersion == result.model["version"]
    assert algorithm.AlgorithmParameters == "coverage=0.9"
    assert (seg.Manufacturer, seg.SoftwareVersions) == ("lesionseg", lesionseg.__version__)


def test_a_picture_with_no_lesion_gives_one_empty_frame(lesion_rgb):
    source = source_of(lesion_rgb)
    empty = np.zeros((source.Rows, source.Columns), bool)
    seg = highdicom.seg.segread(io.BytesIO(to_bytes(segmentation(source, empty, MODEL, THRESHOLD))))
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])
    assert seg.NumberOfFrames == 1 and not pixels.any()


def test_the_content_description_is_kept_or_shortened_to_64_characters(lesion_rgb):
    source = source_of(lesion_rgb)
    empty = np.zeros((source.Rows, source.Columns), bool)
    verdict = "Confirmed by Dr Müller"
    assert read_back(segmentation(source, empty, MODEL, THRESHOLD, verdict)).ContentDescription == verdict
    long_verdict = "Corrected: the lesion extends further\nto the left, \\ the border was missed " * 3
    shortened = read_back(segmentation(source, empty, MODEL, THRESHOLD, long_verdict)).ContentDescription
    assert len(shortened) == 64 and shortened.startswith("Corrected: the lesion extends further to the left, /")


def test_every_call_writes_new_instances_in_new_series(lesion_rgb):
    source = source_of(lesion_rgb)
    empty = np.zeros((source.Rows, source.Columns), bool)
    uncertainty = np.zeros((source.Rows, source.Columns), np.float32)
    written = [segmentation(source, empty, MODEL, THRESHOLD) for _ in range(2)]
    written += [parametric_map(source, uncertainty, MODEL, THRESHOLD) for _ in range(2)]
    assert len({dataset.SOPInstanceUID for dataset in written}) == 4
    assert len({dataset.SeriesInstanceUID for dataset in written}) == 4
    # The maps' own frame of reference is the picture's: every map of one picture lies in the same one.
    assert written[2].FrameOfReferenceUID == written[3].FrameOfReferenceUID


def test_a_map_of_another_size_than_its_picture_is_refused(lesion_rgb):
    source = source_of(lesion_rgb)
    with pytest.raises(ValueError, match="rows"):
        segmentation(source, np.zeros((source.Columns, source.Rows), bool), MODEL, THRESHOLD)
    with pytest.raises(ValueError, match="rows"):
        parametric_map(source, np.zeros((source.Rows, source.Columns, 1), np.float32), MODEL, THRESHOLD)


@pytest.mark.slow
def test_the_parametric_map_reads_back_as_the_uncertainty(lesion_rgb, result):
    source = source_of(lesion_rgb)
    written = read_back(parametric_map(source, result.uncertainty, model_of(result), threshold_of(result)))
    values = highdicom.Image.from_dataset(written).get_frame(1, apply_real_world_transform=True)
    assert result.uncertainty.max() > 0.05  # a real map, not a flat one
    np.testing.assert_allclose(values, result.uncertainty, rtol=0, atol=UNCERTAINTY_TOLERANCE)
    assert written.StudyInstanceUID == source.StudyInstanceUID and written.PatientID == PATIENT_ID
    derivation = written.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert derivation.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert written.SeriesDescription == "lesionseg uncertainty"


@pytest.mark.slow
def test_the_parametric_map_says_what_its_values_are_and_who_made_them(lesion_rgb, result):
    written = read_back(parametric_map(source_of(lesion_rgb), result.uncertainty, model_of(result), {"tta": "1"}))
    mapping = real_world_value_mapping(written)
    assert mapping.LUTExplanation == "Standard deviation of the lesion probability"
    unit = mapping.MeasurementUnitsCodeSequence[0]
    assert (unit.CodingSchemeDesignator, unit.CodeValue) == ("UCUM", "1")
    assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeMeaning == "Standard Deviation"
    assert mapping.RealWorldValueSlope == pytest.approx(0.5 / 65535)
    description = written.DerivationDescription
    assert f"lesionseg {result.model['name']} {result.model['version']} (tta=1)" in description
    assert (written.Manufacturer, written.SoftwareVersions) == ("lesionseg", lesionseg.__version__)


@pytest.mark.slow
@pytest.mark.parametrize("sop_class", SOP_CLASSES)
def test_dciodvfy_finds_no_error_in_either_object(lesion_rgb, result, sop_class, tmp_path):
    source = source_of(lesion_rgb, sop_class)
    assert_valid(segmentation(source, result.mask, model_of(result), threshold_of(result), "Confirmed"), tmp_path)
    assert_valid(parametric_map(source, result.uncertainty, model_of(result), threshold_of(result)), tmp_path)


@pytest.mark.slow
def test_a_picture_without_orientation_laterality_or_patient_details_gives_valid_objects(lesion_rgb, result, tmp_path):
    source = source_of(lesion_rgb)
    left_out = ["PatientOrientation", "Laterality", "PatientSex", "PatientBirthDate", "AccessionNumber", "StudyID"]
    for keyword in left_out:
        delattr(source, keyword)
    assert_valid(segmentation(source, result.mask, model_of(result), threshold_of(result)), tmp_path)
    assert_valid(parametric_map(source, result.uncertainty, model_of(result), threshold_of(result)), tmp_path)
    assert not any(keyword in source for keyword in left_out)  # the caller's dataset is left as it was

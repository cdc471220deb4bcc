"""The DICOM objects lesionseg answers with: the mask as a Segmentation, the uncertainty as a Parametric Map.

Both are derived from the picture's own dataset (its pixels need not be there): the same patient and study, a
new series, one 2D frame that matches the source pixel for pixel and references it, and lesionseg named as the
algorithm that made it.
"""

import copy
import io
import re

import highdicom
import numpy as np
from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import lesionseg
from lesionseg.imaging.render import MAX_POSSIBLE_STD, uncertainty_to_uint16

MANUFACTURER = "lesionseg"
SEGMENTATION_SERIES = (901, "lesionseg segmentation")
UNCERTAINTY_SERIES = (902, "lesionseg uncertainty")
# DICOM's Long String (LO): at most 64 characters, no backslash (the value separator), no control characters.
LONG_STRING_LENGTH = 64
# Written as UTF-8 whatever the source's character set: a reviewer's verdict may hold characters the source's
# set cannot, and UTF-8 holds every name the source can.
CHARACTER_SET = "ISO_IR 192"
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# highdicom reads these off the source directly. They are Type 2 (present, maybe empty) in every picture's
# Patient and Study modules, but converters do leave some out; an empty value is what the standard allows.
PATIENT_AND_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)
# The uncertainty is stored as 16-bit levels, level = round(std / 0.5 × 65535) (the `format=uncertainty` PNG's
# levels), with a real-world value slope of 0.5 / 65535, rather than as 32-bit floats: integer pixels are what
# viewers and PACS display and compress (Float Pixel Data is newer, and often shown blank or refused), and a
# step of 7.6e-6 is far finer than any difference in uncertainty that matters.
UNCERTAINTY_LEVELS = 65535
UNCERTAINTY_STEP = MAX_POSSIBLE_STD / UNCERTAINTY_LEVELS
NOMINAL_PIXEL_SPACING = [1.0, 1.0]


def segmentation(
    source: Dataset,
    mask: np.ndarray,
    model: dict[str, str],
    parameters: dict[str, str],
    content_description: str | None = None,
) -> Dataset:
    """A binary DICOM Segmentation of `source` with one segment, Lesion, made automatically by lesionseg's
    `model` run with `parameters` (e.g. {"threshold": "0.5"}). `mask` is H×W bool at the source's size.
    `content_description` (e.g. a reviewer's verdict) is shortened to the 64 characters DICOM allows."""
    check_size(source, mask)
    lesion = highdicom.seg.SegmentDescription(
        segment_number=1,
        segment_label="Lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=highdicom.AlgorithmIdentificationSequence(
            name=algorithm_name(model),
            family=codes.DCM.ArtificialIntelligence,
            version=long_string(model["version"]),
            source=MANUFACTURER,
            parameters=parameters,
        ),
    )
    header = source_header(source)
    series_number, series_description = SEGMENTATION_SERIES
    lesion_segmentation = highdicom.seg.Segmentation(
        source_images=[header],
        pixel_array=mask.astype(bool, copy=False),
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[lesion],
        # A picture with no lesion is an answer too: its one frame, all background, is kept.
        omit_empty_frames=False,
        content_label="LESION",
        content_description=None if content_description is None else long_string(content_description),
        series_description=series_description,
        **equipment(series_number, model),
    )
    # With no frame of reference, the General Image module asks for the orientation the source's rows and
    # columns have (Type 2C: empty where unknown); highdicom leaves it out.
    lesion_segmentation.PatientOrientation = header.get("PatientOrientation", "")
    return lesion_segmentation


def parametric_map(
    source: Dataset, uncertainty: np.ndarray, model: dict[str, str], parameters: dict[str, str]
) -> Dataset:
    """The uncertainty map (H×W float32 standard deviation of the lesion probability, 0…0.5, at the source's
    size) as a DICOM Parametric Map of `source`, its real-world value mapping saying what the values are."""
    check_size(source, uncertainty)
    mapping = highdicom.pm.RealWorldValueMapping(
        lut_label="PROBABILITY_STD",
        lut_explanation="Standard deviation of the lesion probability",
        unit=codes.UCUM.NoUnits,
        value_range=(0, UNCERTAINTY_LEVELS),
        slope=UNCERTAINTY_STEP,
        intercept=0,
        quantity_definition=codes.SCT.StandardDeviation,
    )
    # The whole scale, 0 to 0.5, like the heatmap's absolute scale: one grey is one uncertainty in every map.
    # In lists: highdicom 0.28 stores a lone explanation string as a list of its characters.
    window = highdicom.VOILUTTransformation(
        window_center=[(UNCERTAINTY_LEVELS + 1) / 2],
        window_width=[UNCERTAINTY_LEVELS + 1],
        window_explanation=["Standard deviation 0 to 0.5"],
    )
    header = source_header(source)
    place_in_plane(header)
    series_number, series_description = UNCERTAINTY_SERIES
    uncertainty_map = highdicom.pm.ParametricMap(
        source_images=[header],
        pixel_array=uncertainty_to_uint16(uncertainty),
        contains_recognizable_visual_features=False,
        # The standard deviation of pixel values over several pictures: here the Monte Carlo samples.
        derived_pixel_contrast=highdicom.pm.DerivedPixelContrastValues.STD_DEVIATION,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[window],
        content_label="UNCERTAINTY",
        content_description="Monte Carlo dropout uncertainty of the lesion",
        series_description=series_description,
        **equipment(series_number, model),
    )
    # A Parametric Map has no algorithm identification of its own: the General Reference module's
    # derivation description says which algorithm, version and parameters made it.
    uncertainty_map.DerivationDescription = (
        f"{algorithm_name(model)} {model['version']} ({format_parameters(parameters)}): standard deviation of "
        "the lesion probability over Monte Carlo dropout samples"
    )
    # Type 2C in the General Series module, required here (no frame gives a laterality): the source's, or empty
    # (unknown). The Segmentation must leave it out.
    uncertainty_map.Laterality = header.get("Laterality", "")
    return uncertainty_map


def to_bytes(dataset: Dataset) -> bytes:
    """A DICOM Part 10 file (preamble, "DICM", file meta information) of the dataset, as `application/dicom`
    answers carry it."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def equipment(series_number: int, model: dict[str, str]) -> dict:
    """What both objects say about who made them: a new series and instance, fresh UIDs, lesionseg's version."""
    return {
        "series_instance_uid": highdicom.UID(),
        "series_number": series_number,
        "sop_instance_uid": highdicom.UID(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": long_string(model["name"]),
        "software_versions": lesionseg.__version__,
        # Software has no serial number, but the Enhanced General Equipment module requires one: the model's
        # version is what tells one lesionseg model's output from another's.
        "device_serial_number": long_string(model["version"]),
        "specific_character_set": CHARACTER_SET,
    }


def algorithm_name(model: dict[str, str]) -> str:
    return long_string(f"{MANUFACTURER} {model['name']}")


def format_parameters(parameters: dict[str, str]) -> str:
    """As the Segmentation's Algorithm Parameters write them: "threshold=0.5", comma separated."""
    return ",".join(f"{name}={value}" for name, value in parameters.items())


def long_string(text: str) -> str:
    """`text` as a valid Long String: whitespace runs (line breaks too) made one space, backslashes made
    slashes, and, past 64 characters, cut with an ellipsis rather than refused."""
    text = re.sub(r"\s+", " ", text).strip().replace("\\", "/")
    if len(text) <= LONG_STRING_LENGTH:
        return text
    return text[: LONG_STRING_LENGTH - 1].rstrip() + "…"


def check_size(source: Dataset, array: np.ndarray) -> None:
    if array.shape != (source.Rows, source.Columns):
        raise ValueError(f"a map of shape {array.shape} for a picture of {source.Rows} rows × {source.Columns} columns")


def source_header(source: Dataset) -> Dataset:
    """A copy of the source's attributes but its pixels, to complete without touching the caller's dataset,
    with any Type 2 patient or study attribute it left out present and empty."""
    header = Dataset(
        {tag: copy.deepcopy(source[tag]) for tag in source.keys() if keyword_for_tag(tag) not in PIXEL_DATA_KEYWORDS}
    )
    for keyword in PATIENT_AND_STUDY_KEYWORDS:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def place_in_plane(header: Dataset) -> None:
    """A Parametric Map must lie in a frame of reference, which a photograph has not. Unless the source says
    where its plane is, it gets a frame of its own (the same for every map of this picture, so they overlay),
    in which it lies at the origin, rows along x and columns along y, with its pixel spacing or a nominal 1 mm.
    A frame the source had but placed no plane in says nothing of where the picture lies, so it is replaced."""
    if "ImagePositionPatient" in header:
        return
    header.FrameOfReferenceUID = generate_uid(entropy_srcs=["lesionseg frame of reference", header.SOPInstanceUID])
    header.PositionReferenceIndicator = ""
    header.ImagePositionPatient = [0.0, 0.0, 0.0]
    header.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    header.PixelSpacing = header.get("PixelSpacing") or NOMINAL_PIXEL_SPACING
    header.SliceThickness = None  # a photograph has none; Type 2 in the Image Plane module: empty

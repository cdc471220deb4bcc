"""DICOM uploads: every transfer syntax we read gives the picture itself, a DICOM-wrapped JPEG the same mask as the
JPEG, and the hostile set a clear 4xx error each, whose message never quotes the patient."""

import io
import logging

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from tests.dicom.hostile import HOSTILE_FILES, encapsulated_stream_cut_short, picture
from tests.dicom.pictures import (
    DERMOSCOPIC_PHOTOGRAPHY,
    PATIENT_ID,
    SECONDARY_CAPTURE,
    VL_PHOTOGRAPHIC,
    wrap_jpeg,
    wrap_rgb,
)

from lesionseg.config import Settings
from lesionseg.imaging.containers import is_dicom
from lesionseg.imaging.decode import ImageRejected, decode_upload
from lesionseg.imaging.dicom import DicomIdentifiers, declared_pixels
from lesionseg.segmenter import Segmenter

LIMITS = Settings()
DRAFT_SIZE = 384


def decode(data: bytes, keep_photo: bool = False):
    return decode_upload(data, LIMITS.max_pixels, LIMITS.min_side, DRAFT_SIZE, keep_photo)


@pytest.fixture(scope="module")
def lesion_rgb(real_image_path) -> np.ndarray:
    """A real dermoscopic picture, 600×450."""
    bgr = cv2.resize(cv2.imread(str(real_image_path)), (600, 450), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize(
    "transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, JPEG2000Lossless, RLELossless]
)
def test_a_lossless_dicom_picture_decodes_to_its_own_pixels(lesion_rgb, transfer_syntax):
    decoded = decode(wrap_rgb(lesion_rgb, transfer_syntax))
    assert decoded.format == "DICOM"
    assert (decoded.original_width, decoded.original_height) == (600, 450)
    np.testing.assert_array_equal(decoded.rgb, lesion_rgb)


@pytest.mark.parametrize("sop_class", [VL_PHOTOGRAPHIC, DERMOSCOPIC_PHOTOGRAPHY, SECONDARY_CAPTURE])
def test_each_kind_of_colour_picture_is_read(sop_class):
    decoded = decode(wrap_rgb(picture(), sop_class=sop_class))
    np.testing.assert_array_equal(decoded.rgb, picture())
    assert decoded.dicom.SOPClassUID == sop_class


def test_a_dicom_wrapped_jpeg_is_decoded_as_the_jpeg_itself(original_size_image_path):
    """A camera's JPEG, full size (reduced in the decoder for the model, as a JPEG upload is) and shown."""
    jpeg = original_size_image_path.read_bytes()
    for keep_photo in (False, True):
        as_dicom, as_jpeg = decode(wrap_jpeg(jpeg), keep_photo), decode(jpeg, keep_photo)
        np.testing.assert_array_equal(as_dicom.rgb, as_jpeg.rgb)
        assert (as_dicom.original_width, as_dicom.original_height) == (as_jpeg.original_width, as_jpeg.original_height)


@pytest.mark.slow
def test_the_same_picture_as_dicom_gives_the_same_mask_as_its_jpeg(predictor, large_jpeg_path):
    segmenter = Segmenter(predictor)
    jpeg = large_jpeg_path.read_bytes()
    from_jpeg = segmenter.predict(jpeg, seed=3)
    from_dicom = segmenter.predict(wrap_jpeg(jpeg), seed=3)
    np.testing.assert_array_equal(from_dicom.mask, from_jpeg.mask)
    np.testing.assert_array_equal(from_dicom.uncertainty, from_jpeg.uncertainty)


def test_the_kept_header_has_the_identifiers_but_no_pixels_or_private_elements():
    dataset = pydicom.dcmread(io.BytesIO(wrap_rgb(picture())))
    dataset.private_block(0x0011, "LESIONSEG TEST", create=True).add_new(0x01, "LO", "private")
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    header = decode(buffer.getvalue()).dicom
    assert "PixelData" not in header and (0x0011, 0x1001) not in header
    identifiers = DicomIdentifiers.of(header)
    assert identifiers.patient_id == PATIENT_ID
    assert identifiers.sop_instance_uid == dataset.SOPInstanceUID
    assert identifiers.study_instance_uid == dataset.StudyInstanceUID


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_each_hostile_dicom_file_gets_a_clear_error_that_never_quotes_the_patient(name):
    make, status, word = HOSTILE_FILES[name]
    with pytest.raises(ImageRejected) as refusal:
        decode(make())
    assert refusal.value.status_code == status
    assert word in refusal.value.message
    assert PATIENT_ID not in refusal.value.message and "Testpatient" not in refusal.value.message


def test_a_picture_smaller_than_the_smallest_side_is_refused():
    with pytest.raises(ImageRejected) as refusal:
        decode(wrap_rgb(np.zeros((10, 10, 3), np.uint8)))
    assert refusal.value.status_code == 422


def test_the_declared_size_is_read_for_the_memory_budget_without_the_pixels():
    assert declared_pixels(wrap_rgb(picture())) == 96 * 128
    assert declared_pixels(HOSTILE_FILES["huge declared frame"][0]()) == 60_000**2
    assert declared_pixels(HOSTILE_FILES["deflated"][0]()) == 0  # never inflated to be measured
    assert is_dicom(wrap_rgb(picture())) and not is_dicom(b"\xff\xd8\xff" + bytes(200))


class Gathered(logging.Handler):
    """What reaches the root logger, where a deployment's handlers write."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()} {getattr(record, 'fields', '')}")


def test_the_dicom_libraries_warnings_are_counted_but_their_text_never_logged():
    """pydicom warns with a file's values in its text (a patient's name that breaks its rules, say)."""
    gathered, root = Gathered(), logging.getLogger()
    root.addHandler(gathered)
    try:
        with pytest.raises(ImageRejected):
            decode(encapsulated_stream_cut_short())
    finally:
        root.removeHandler(gathered)
    logged = "\n".join(gathered.lines)
    assert "the image decoder warned" in logged and "withheld" in logged
    assert "delimiter" not in logged  # pydicom's own text

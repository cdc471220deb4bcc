"""DICOM over HTTP, on the real server and model: a DICOM upload's mask is its JPEG's; dicom-seg and dicom-pmap
answer with valid objects holding that mask and uncertainty; a picture file asking for them gets a 422 before any
work; the hostile DICOM set gets its 4xx errors in our words, and memory returns to its level."""

import io

import highdicom
import httpx
import numpy as np
import pydicom
import pytest
from tests.api.test_memory import resident_megabytes
from tests.conftest import RunningServer, decode_png
from tests.dicom.hostile import HOSTILE_FILES
from tests.dicom.pictures import PATIENT_ID, wrap_jpeg
from tests.dicom.validation import dciodvfy_errors

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow

# What a hostile file may leave held in the server after it is refused: none of them is decoded at its claimed
# size, so only the allocator's slack and Python's caches remain (the parsed headers are freed with the request).
HELD_AFTER_REFUSALS_MB = 64


def post(client: httpx.Client, data: bytes, **params) -> httpx.Response:
    files = {"file": ("picture.dcm", data, "application/dicom")}
    return client.post("/predict/", files=files, params={"seed": 3, "samples": 6, **params})


@pytest.fixture(scope="module")
def camera_jpeg(large_jpeg_path) -> bytes:
    return large_jpeg_path.read_bytes()


def test_a_dicom_picture_gives_the_mask_of_its_jpeg(client, camera_jpeg):
    from_dicom = post(client, wrap_jpeg(camera_jpeg), format="mask")
    from_jpeg = post(client, camera_jpeg, format="mask")
    assert from_dicom.status_code == 200, from_dicom.text
    np.testing.assert_array_equal(decode_png(from_dicom.content), decode_png(from_jpeg.content))


def test_dicom_seg_holds_the_mask_and_references_its_source(client, camera_jpeg, tmp_path):
    data = wrap_jpeg(camera_jpeg)
    answer = post(client, data, format="dicom-seg")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/dicom"
    assert dciodvfy_errors(answer.content, tmp_path) == []
    segmentation = highdicom.seg.segread(io.BytesIO(answer.content))
    source_uid = segmentation.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    pixels = segmentation.get_pixels_by_source_instance([source_uid], segment_numbers=[1])
    mask = decode_png(post(client, data, format="mask").content) > 0
    np.testing.assert_array_equal(pixels[0, :, :, 0] > 0, mask)
    assert segmentation.PatientID == PATIENT_ID
    parameters = segmentation.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
    assert "threshold=" in parameters and "seed=3" in parameters


def test_dicom_pmap_holds_the_uncertainty_maps_levels(client, camera_jpeg, tmp_path):
    """The Parametric Map stores round(std / 0.5 × 65535), the levels of format=uncertainty, with a real-world
    value mapping back to the standard deviation."""
    data = wrap_jpeg(camera_jpeg)
    answer = post(client, data, format="dicom-pmap")
    assert answer.status_code == 200, answer.text
    assert dciodvfy_errors(answer.content, tmp_path) == []
    parametric_map = highdicom.pm.ParametricMap.from_dataset(pydicom.dcmread(io.BytesIO(answer.content)))
    levels = decode_png(post(client, data, format="uncertainty").content)
    np.testing.assert_array_equal(parametric_map.pixel_array, levels)


def test_a_picture_file_asking_for_a_dicom_answer_gets_a_422_saying_why(client, camera_jpeg):
    for format in ("dicom-seg", "dicom-pmap"):
        answer = client.post(
            "/predict/", files={"file": ("lesion.jpg", camera_jpeg, "image/jpeg")}, params={"format": format}
        )
        assert answer.status_code == 422
        assert "DICOM upload" in answer.json()["detail"]


@pytest.fixture(scope="module")
def measured_server():
    server = RunningServer()
    yield server
    server.stop()


def test_the_hostile_dicom_set_gets_its_errors_and_memory_returns(measured_server):
    pid = measured_server.process.pid
    with httpx.Client(base_url=measured_server.url, timeout=120) as client:
        # Once first: pydicom is imported on the first DICOM upload, and stays, as any module does.
        for make, _, _ in HOSTILE_FILES.values():
            post(client, make(), format="mask")
        idle = resident_megabytes(pid)
        for _ in range(3):
            for name, (make, status, word) in HOSTILE_FILES.items():
                answer = post(client, make(), format="mask")
                assert answer.status_code == status, (name, answer.text)
                detail = answer.json()["detail"]
                assert word in detail, (name, detail)
                for internal in ("pydicom", "Traceback", "Error:", "/usr", "/tmp", PATIENT_ID):
                    assert internal not in detail, (name, internal, detail)
        assert client.get("/health").status_code == 200
    held = resident_megabytes(pid) - idle
    assert held <= HELD_AFTER_REFUSALS_MB, f"{held:.0f} MB still held after the hostile set"

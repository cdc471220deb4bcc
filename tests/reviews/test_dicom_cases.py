"""DICOM cases in the worklist, over HTTP on the real model: the source's patient, study, series and instance kept
and shown to readers only, the picture served as PNG for the page, the approved mask exported as a DICOM
Segmentation with the verdict, and the patient's details never in the service's log."""

import io
import subprocess
import sys

import cv2
import highdicom
import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from tests.dicom.pictures import ACCESSION_NUMBER, PATIENT_ID, PATIENT_NAME, wrap_rgb
from tests.dicom.validation import dciodvfy_errors
from tests.reviews.conftest import new_database_url
from tests.reviews.test_cases_http import Service

from lesionseg.imaging.regions import rle_decode

# Slow tier (`make test-fast` leaves it out): a real server process over HTTP.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom-worklist")
    running = Service(new_database_url("sqlite", request, folder), folder / "images").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def dicom_upload(real_image_path) -> tuple[bytes, np.ndarray]:
    """A real dermoscopic picture as an uncompressed VL Photographic instance, and its pixels."""
    rgb = cv2.cvtColor(cv2.imread(str(real_image_path)), cv2.COLOR_BGR2RGB)
    return wrap_rgb(rgb), rgb


def test_a_dicom_case_keeps_its_source_for_readers_only_and_serves_its_picture(service, dicom_upload):
    data, rgb = dicom_upload
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    created = service.upload(data)
    assert created.status_code == 201, created.text
    case = created.json()
    assert case["image"]["media_type"] == "application/dicom"
    described = service.get(f"/cases/{case['id']}").json()
    assert described["source"]["dicom"] == {
        "patient_id": PATIENT_ID,
        "accession_number": ACCESSION_NUMBER,
        "study_instance_uid": header.StudyInstanceUID,
        "series_instance_uid": header.SeriesInstanceUID,
        "sop_instance_uid": header.SOPInstanceUID,
    }
    refused = httpx.get(f"{service.url}/cases/{case['id']}", timeout=60)  # no key
    assert refused.status_code == 401 and PATIENT_ID not in refused.text
    picture = service.get(f"/cases/{case['id']}/image")
    assert picture.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(picture.content))), rgb)
    original = service.get(f"/cases/{case['id']}/image", original="true")
    assert original.headers["content-type"] == "application/dicom" and original.content == data


def test_an_approved_dicom_case_is_exported_as_a_segmentation_with_its_verdict(service, dicom_upload, tmp_path):
    data, _ = dicom_upload
    case = service.upload(data).json()
    mask = rle_decode(case["mask_rle"])
    accepted = service.review(case["id"], {"status": "accepted", "version": case["review"]["version"]})
    assert accepted.status_code == 200, accepted.text
    output = tmp_path / "export"
    exported = subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", "export-reviews", str(output)],
        env={"LESIONSEG_DATABASE_URL": service.database_url, "LESIONSEG_STORAGE_DIR": str(service.storage)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert exported.returncode == 0, exported.stderr
    written = (output / "segmentations" / f"{case['id']}.dcm").read_bytes()
    assert dciodvfy_errors(written, tmp_path) == []
    segmentation = highdicom.seg.segread(io.BytesIO(written))
    assert segmentation.ContentDescription.startswith("accepted by ")
    source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert segmentation.StudyInstanceUID == source.StudyInstanceUID
    pixels = segmentation.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])
    np.testing.assert_array_equal(pixels[0, :, :, 0] > 0, mask)
    manifest = (output / "manifest.csv").read_text()
    assert source.SOPInstanceUID in manifest and PATIENT_ID not in manifest


def test_the_patients_details_never_reach_the_services_log(service, dicom_upload):
    """Uploads, refusals and reads of DICOM cases, then the whole log searched for the patient."""
    data, _ = dicom_upload
    service.upload(data)
    service.upload(data[: len(data) // 3])  # truncated: refused
    log = service.server.read_log()
    for detail in (PATIENT_ID, PATIENT_NAME, "Testpatient", ACCESSION_NUMBER):
        assert detail not in log

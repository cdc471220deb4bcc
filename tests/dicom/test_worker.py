"""`lesionseg dicomweb` against a real PACS: DICOM dermoscopy pictures stored in Orthanc, the worker run as a user
runs it, and what it wrote read back over DICOMweb: a Segmentation equal to the HTTP service's mask and a
Parametric Map of its uncertainty per picture, valid by dciodvfy, each picture handled once, a refused one
recorded, patients' details never printed."""

import io
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import highdicom
import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ParametricMapStorage, RLELossless, SegmentationStorage
from tests.conftest import decode_png
from tests.dicom.pictures import (
    ACCESSION_NUMBER,
    DERMOSCOPIC_PHOTOGRAPHY,
    PATIENT_ID,
    PATIENT_NAME,
    SECONDARY_CAPTURE,
    wrap_jpeg,
    wrap_rgb,
)
from tests.dicom.validation import dciodvfy_errors
from tests.reviews.test_cases_http import KEYS, Service

from lesionseg.batch.dicomweb import list_pictures

# Slow tier (`make test-fast` leaves it out): Orthanc, the HTTP service and the CLI, each in its own process.
pytestmark = pytest.mark.slow

LESIONSEG = Path(sys.executable).parent / "lesionseg"
# Small enough to keep each picture quick, large enough to be a real dermoscopy photo to the model.
PICTURE_SIZE = (600, 450)
SEED = 0  # the worker's default, given to the HTTP service too


def shrunk_rgb(path: Path) -> np.ndarray:
    bgr = cv2.resize(cv2.imread(str(path)), PICTURE_SIZE, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def jpeg_of(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def store(pacs, files: list[bytes]) -> None:
    pacs.client().store_instances([dcmread(io.BytesIO(data)) for data in files])


@pytest.fixture(scope="module")
def pictures(orthanc, isic_validation_pairs) -> dict[str, bytes]:
    """The DICOM files put in the PACS: three real pictures, one of each class the worker asks for (and three
    transfer syntaxes), and one of 10×10 pixels, which is refused as too small."""
    rgb = [shrunk_rgb(record.image_path) for record in isic_validation_pairs[:3]]
    files = {
        "VL Photographic, uncompressed": wrap_rgb(rgb[0]),
        "Dermoscopic Photography, JPEG baseline": wrap_jpeg(jpeg_of(rgb[1]), DERMOSCOPIC_PHOTOGRAPHY),
        "Secondary Capture, RLE": wrap_rgb(rgb[2], RLELossless, SECONDARY_CAPTURE),
        "too small": wrap_rgb(rgb[0][:10, :10]),
    }
    store(orthanc, list(files.values()))
    return files


def uids_of(data: bytes) -> tuple[str, str, str]:
    dataset = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID


@dataclass
class WorkerRun:
    returncode: int
    output: str  # stdout and stderr
    summary: dict  # the pass's summary, the last JSON line on stdout


def run_worker(pacs, state: Path, *arguments: str, **environment: str) -> WorkerRun:
    command = [str(LESIONSEG), "dicomweb", "--url", pacs.url, "--state", str(state), "--once", *arguments]
    finished = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **pacs.environment, **environment}, timeout=600
    )
    summaries = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    summary = json.loads(summaries[-1]) if summaries else {}
    return WorkerRun(finished.returncode, finished.stdout + finished.stderr, summary)


@dataclass
class Worked:
    first: WorkerRun
    second: WorkerRun  # a new process on the same state file
    state: Path
    worklist: Service


@pytest.fixture(scope="module")
def worked(orthanc, pictures, tmp_path_factory) -> Worked:
    """The worker run twice over the PACS, with every picture flagged for review (a review threshold of 0) and
    the review worklist of a real service to send them to."""
    folder = tmp_path_factory.mktemp("worker")
    worklist = Service(f"sqlite:///{folder / 'cases.db'}", folder / "images").start()
    state = folder / "state.sqlite3"
    options = ("--worklist-url", worklist.url)
    settings = {"LESIONSEG_REVIEW_THRESHOLD": "0", "LESIONSEG_API_KEY": KEYS["reviewer"]}
    try:
        first = run_worker(orthanc, state, *options, **settings)
        second = run_worker(orthanc, state, *options, **settings)
        yield Worked(first, second, state, worklist)
    finally:
        worklist.stop()


def stored_outputs(pacs) -> list[Dataset]:
    """Every Segmentation and Parametric Map in the PACS (a Parametric Map's modality is OT)."""
    client = pacs.client()
    found = []
    for modality, sop_class in (("SEG", SegmentationStorage), ("OT", ParametricMapStorage)):
        for answer in client.search_for_instances(search_filters={"Modality": modality}):
            listed = Dataset.from_json(answer)
            if listed.SOPClassUID == sop_class:
                found.append(
                    client.retrieve_instance(listed.StudyInstanceUID, listed.SeriesInstanceUID, listed.SOPInstanceUID)
                )
    return found


def outputs_of(source: bytes, outputs: list[Dataset]) -> dict[str, list[Dataset]]:
    """The Segmentations and Parametric Maps that reference the picture `source`."""
    referencing = [output for output in outputs if uids_of(source) in source_uids(output)]
    return {
        "segmentations": [output for output in referencing if output.SOPClassUID == SegmentationStorage],
        "parametric maps": [output for output in referencing if output.SOPClassUID == ParametricMapStorage],
    }


def source_uids(output: Dataset) -> list[tuple[str, str, str]]:
    image = highdicom.Image.from_dataset(output, copy=True)
    return [tuple(str(uid) for uid in uids) for uids in image.get_source_image_uids()]


def good_pictures(pictures: dict[str, bytes]) -> dict[str, bytes]:
    return {label: data for label, data in pictures.items() if label != "too small"}


def test_each_picture_comes_back_as_a_segmentation_and_a_parametric_map_in_its_study(orthanc, pictures, worked):
    assert worked.first.summary["done"] == 3, worked.first.output
    outputs = stored_outputs(orthanc)
    for label, data in good_pictures(pictures).items():
        found = outputs_of(data, outputs)
        assert [len(found["segmentations"]), len(found["parametric maps"])] == [1, 1], label
        study, series, _ = uids_of(data)
        for output in found["segmentations"] + found["parametric maps"]:
            # The picture's study, a series of our own.
            assert output.StudyInstanceUID == study and output.SeriesInstanceUID != series, label
        segment = found["segmentations"][0].SegmentSequence[0]
        assert segment.SegmentLabel == "Lesion" and segment.SegmentAlgorithmType == "AUTOMATIC", label
    refused = outputs_of(pictures["too small"], outputs)
    assert refused == {"segmentations": [], "parametric maps": []}


def test_the_segmentation_is_the_http_services_mask_and_the_map_its_uncertainty(orthanc, pictures, worked, client):
    """The same DICOM file posted to `lesionseg serve`, with the worker's seed: the same mask, and the same
    standard deviation as the 16-bit uncertainty PNG to within that PNG's quantisation step."""
    outputs = stored_outputs(orthanc)
    for label, data in good_pictures(pictures).items():
        found = outputs_of(data, outputs)
        segmentation = highdicom.seg.Segmentation.from_dataset(found["segmentations"][0], copy=True)
        _, _, sop_uid = uids_of(data)
        mask = segmentation.get_pixels_by_source_instance([sop_uid], segment_numbers=[1])[0, :, :, 0]
        answers = {
            output: client.post("/predict/", params={"format": output, "seed": SEED}, files={"file": data})
            for output in ("mask", "uncertainty")
        }
        assert all(answer.status_code == 200 for answer in answers.values()), label
        np.testing.assert_array_equal(mask > 0, decode_png(answers["mask"].content) > 0, err_msg=label)

        uncertainty = decode_png(answers["uncertainty"].content) / 65535 * 0.5  # std / 0.5 × 65535, rounded
        stored = real_world_values(found["parametric maps"][0])
        assert stored.shape == uncertainty.shape, label
        np.testing.assert_allclose(stored, uncertainty, rtol=0, atol=0.5 * 0.5 / 65535 + 1e-6, err_msg=label)


def real_world_values(parametric_map: Dataset) -> np.ndarray:
    """The map's pixels through its real-world value mapping: the standard deviation itself."""
    mapping = parametric_map.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    pixels = parametric_map.pixel_array.astype(np.float64)
    return pixels * float(mapping.RealWorldValueSlope) + float(mapping.RealWorldValueIntercept)


def test_every_object_the_worker_wrote_passes_dciodvfy(orthanc, worked, tmp_path):
    outputs = stored_outputs(orthanc)
    assert len(outputs) >= 6
    for output in outputs:
        buffer = io.BytesIO()
        output.save_as(buffer, enforce_file_format=True)
        assert dciodvfy_errors(buffer.getvalue(), tmp_path) == [], output.SOPClassUID.name


def test_a_picture_too_small_is_refused_and_recorded_and_the_others_are_done(pictures, worked):
    first = worked.first
    assert first.returncode == 3, first.output  # some refused: batch's "some failed"
    assert {key: first.summary[key] for key in ("pictures", "done", "refused", "failed")} == {
        "pictures": 4,
        "done": 3,
        "refused": 1,
        "failed": 0,
    }
    with sqlite3.connect(worked.state) as connection:
        recorded = dict(connection.execute("SELECT sop_instance_uid, outcome FROM instances"))
        (reason,) = connection.execute("SELECT reason FROM instances WHERE outcome = 'refused'").fetchone()
    assert recorded == {
        uids_of(data)[2]: "refused" if label == "too small" else "done" for label, data in pictures.items()
    }
    assert "10×10" in reason and "at least 16 pixels" in reason


def test_a_second_run_handles_nothing_and_never_takes_its_own_outputs_for_pictures(orthanc, pictures, worked):
    second = worked.second
    assert second.returncode == 0, second.output
    # Four pictures still, though the PACS now also holds three Parametric Maps of modality OT, which is asked for.
    assert {key: second.summary[key] for key in ("pictures", "already_handled", "done", "refused", "failed")} == {
        "pictures": 4,
        "already_handled": 4,
        "done": 0,
        "refused": 0,
        "failed": 0,
    }
    outputs = stored_outputs(orthanc)
    for label, data in good_pictures(pictures).items():
        assert {name: len(found) for name, found in outputs_of(data, outputs).items()} == {
            "segmentations": 1,
            "parametric maps": 1,
        }, label


def test_the_listing_pages_through_every_picture_and_takes_no_output_for_one(orthanc, pictures, worked):
    """A page of one at a time: every picture found, none of the Segmentations or Parametric Maps (modality OT)."""
    listed = {picture.sop_uid for picture in list_pictures(orthanc.client(), page_size=1)}
    assert {uids_of(data)[2] for data in pictures.values()} <= listed
    assert not listed & {output.SOPInstanceUID for output in stored_outputs(orthanc)}


def test_flagged_pictures_go_to_the_review_worklist_once_named_by_their_sop_instance_uid(pictures, worked):
    assert worked.first.summary["added_to_worklist"] == 3, worked.first.output
    assert worked.second.summary["added_to_worklist"] == 0
    cases = worked.worklist.get("/cases", limit=50).json()["cases"]
    assert sorted(case["external_id"] for case in cases) == sorted(
        uids_of(data)[2] for data in good_pictures(pictures).values()
    )


def test_patients_details_and_uids_never_appear_in_what_the_worker_prints(pictures, worked):
    printed = worked.first.output + worked.second.output
    assert "1/4" in worked.first.output  # it did print its progress
    never = [PATIENT_NAME, PATIENT_ID, ACCESSION_NUMBER, *PATIENT_NAME.split("^")]
    never += [uid for data in pictures.values() for uid in uids_of(data)]
    assert [text for text in never if text in printed] == []


def test_wrong_credentials_stop_the_worker_in_one_line(orthanc, tmp_path):
    refused = run_worker(orthanc, tmp_path / "state.sqlite3", LESIONSEG_DICOMWEB_PASSWORD="not-the-password")
    assert refused.returncode == 2, refused.output
    assert "refused the credentials (401" in refused.output and "Traceback" not in refused.output
    with sqlite3.connect(tmp_path / "state.sqlite3") as connection:
        assert connection.execute("SELECT count(*) FROM instances").fetchone() == (0,)


def test_a_running_worker_picks_up_a_new_picture_and_stops_on_sigterm(orthanc, pictures, worked, isic_validation_pairs):
    """Polling: a picture stored while the worker runs is handled on a later pass; SIGTERM ends it with 0."""
    environment = {**os.environ, **orthanc.environment}
    command = [str(LESIONSEG), "dicomweb", "--url", orthanc.url, "--state", str(worked.state), "--interval", "0.5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        new_picture = wrap_rgb(shrunk_rgb(isic_validation_pairs[3].image_path))
        store(orthanc, [new_picture])
        summary = next_summary(lines, process)
        assert {key: summary[key] for key in ("done", "already_handled")} == {"done": 1, "already_handled": 4}
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=120)
    assert returncode == 0
    assert outputs_of(new_picture, stored_outputs(orthanc))["segmentations"]


def next_summary(lines: queue.Queue, process: subprocess.Popen) -> dict:
    """The first pass summary the worker prints."""
    deadline = time.monotonic() + 300  # a hang guard, not a bound
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert process.poll() is None, "the worker exited"
            continue
        if line.startswith("{"):
            return json.loads(line)
    pytest.fail("the worker printed no summary within 300 s")

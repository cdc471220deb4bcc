"""The review worklist over HTTP, on the real model and a real database (SQLite and PostgreSQL, the same
tests): upload, worklist, correct, roles, races, restarts, and a kill -9 in the middle of uploads."""

import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import cv2
import httpx
import matplotlib
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, inspect, text
from tests.conftest import RunningServer, decode_png
from tests.reviews.conftest import DATABASES, new_database_url

from lesionseg.api.middleware import key_identifier
from lesionseg.data.pairs import discover_pairs
from lesionseg.data.splits import Split
from lesionseg.imaging.regions import rle_decode, rle_encode
from lesionseg.reviews.database import connect

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow

KEYS = {"reader": "reader-key-1", "reviewer": "reviewer-key-1", "second reviewer": "reviewer-key-2", "admin": "admin"}
API_KEYS = "reader:reader-key-1,reviewer:reviewer-key-1,reviewer:reviewer-key-2,admin"


def as_(role: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[role]}


class Service:
    """A server on one database and one image folder, which can be stopped and started again."""

    def __init__(self, database_url: str, storage: Path, arguments: tuple[str, ...] = (), **settings: str) -> None:
        self.database_url, self.storage, self.arguments, self.settings = database_url, storage, arguments, settings
        self.server: RunningServer | None = None

    def start(self, **more_settings: str) -> "Service":
        self.server = RunningServer(
            arguments=self.arguments,
            database_url=self.database_url,
            storage_dir=str(self.storage),
            api_keys=API_KEYS,
            backend="onnx",
            **{**self.settings, **more_settings},
        )
        return self

    def stop(self) -> None:
        if self.server is not None and self.server.process.poll() is None:
            self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def upload(self, data: bytes, role: str = "reviewer", **params) -> httpx.Response:
        files = {"file": ("image", data, "application/octet-stream")}
        return httpx.post(
            f"{self.url}/cases", files=files, params={"seed": 0, **params}, headers=as_(role), timeout=120
        )

    def get(self, path: str, role: str = "reader", **params) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, headers=as_(role), timeout=60)

    def review(self, case_id: str, body: dict, role: str = "reviewer") -> httpx.Response:
        return httpx.put(f"{self.url}/cases/{case_id}/review", json=body, headers=as_(role), timeout=60)

    def delete(self, case_id: str, role: str = "admin") -> httpx.Response:
        return httpx.delete(f"{self.url}/cases/{case_id}", headers=as_(role), timeout=60)

    def reviewer_id(self, role: str) -> str:
        """What the service records of a role's key: its HMAC under the secret in the storage folder."""
        return key_identifier(KEYS[role], (self.storage / ".secret").read_bytes())

    def stored_images(self) -> set[str]:
        return {path.name for path in self.storage.glob("??/??/*") if not path.name.startswith(".")}


@pytest.fixture(scope="module", params=DATABASES)
def service(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"worklist-{request.param}")
    running = Service(new_database_url(request.param, request, folder), folder / "images").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pictures(real_image_path) -> dict[str, bytes]:
    """A dermoscopy photo and a photograph that is not one (a portrait shipped with matplotlib)."""
    portrait = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return {"dermoscopy": real_image_path.read_bytes(), "portrait": portrait.read_bytes()}


def test_an_upload_becomes_a_pending_case_with_the_model_and_settings_that_made_it(service, pictures):
    response = service.upload(pictures["dermoscopy"], samples=6)
    assert response.status_code == 201, response.text
    case = response.json()
    width, height = Image.open(io.BytesIO(pictures["dermoscopy"])).size
    assert case["image"]["width"] == width and case["image"]["height"] == height
    assert case["image"]["bytes"] == len(pictures["dermoscopy"]) and case["image"]["media_type"] == "image/jpeg"
    assert case["settings"] == {"samples": 6, "seed": 0, "threshold": 0.5, "coverage": None, "tta": True}
    info = httpx.get(f"{service.url}/info", headers=as_("reader")).json()
    assert case["model"] == {"name": info["name"], "version": info["version"], "sha256": info["sha256"]}
    assert case["review"]["status"] == "pending" and case["review"]["version"] == 1
    # The same mask /predict/ gives for the same image and settings.
    predicted = httpx.post(
        f"{service.url}/predict/",
        files={"file": ("image", pictures["dermoscopy"], "image/jpeg")},
        params={"format": "json", "samples": 6, "seed": 0},
        headers=as_("reader"),
    ).json()
    assert case["mask_rle"] == predicted["mask_rle"]
    assert case["uncertainty_score"] == pytest.approx(predicted["uncertainty_score"])
    # The image comes back byte for byte, the mask as the PNG of the RLE.
    assert service.get(f"/cases/{case['id']}/image").content == pictures["dermoscopy"]
    mask = decode_png(service.get(f"/cases/{case['id']}/mask").content) == 255
    assert np.array_equal(mask, rle_decode(case["mask_rle"]))


def test_the_worklist_puts_flagged_and_uncertain_cases_first_a_page_at_a_time(service, pictures):
    flagged = service.upload(pictures["portrait"]).json()
    assert flagged["out_of_distribution"] is True and flagged["review_recommended"] is True
    for seed in (1, 2):
        assert service.upload(pictures["dermoscopy"], seed=seed).status_code == 201
    listing = service.get("/cases", status="pending", limit=200).json()
    everything = listing["cases"]
    assert everything[0]["id"] == flagged["id"]
    # The counts are over the whole worklist, whatever the page shows.
    every_status = service.get("/cases", limit=200).json()["cases"]
    for status in ("pending", "accepted", "corrected", "rejected"):
        assert listing["counts"][status] == sum(case["review"]["status"] == status for case in every_status)
    keys = [(case["review_recommended"], case["uncertainty_score"]) for case in everything]
    assert keys == sorted(keys, reverse=True)
    assert "mask_rle" not in everything[0] or everything[0]["mask_rle"] is None
    # Pages of two, joined, are the whole list in the same order.
    paged, cursor = [], None
    while True:
        page = service.get("/cases", status="pending", limit=2, **({"cursor": cursor} if cursor else {})).json()
        paged += [case["id"] for case in page["cases"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == [case["id"] for case in everything]
    assert service.get("/cases", cursor="not-a-cursor").status_code == 422


def test_a_correction_is_saved_with_its_reviewer_and_a_new_version(service, pictures):
    case = service.upload(pictures["dermoscopy"]).json()
    height, width = case["image"]["height"], case["image"]["width"]
    corrected = np.zeros((height, width), bool)
    corrected[height // 4 : height // 2, width // 4 : width // 2] = True
    body = {"status": "corrected", "mask_rle": rle_encode(corrected), "version": 1}
    response = service.review(case["id"], body)
    assert response.status_code == 200, response.text
    review = response.json()["review"]
    assert review["status"] == "corrected" and review["version"] == 2
    assert review["reviewer"] == service.reviewer_id("reviewer")
    assert np.array_equal(decode_png(service.get(f"/cases/{case['id']}/mask").content) == 255, corrected)
    model_mask = decode_png(service.get(f"/cases/{case['id']}/mask", source="model").content) == 255
    assert np.array_equal(model_mask, rle_decode(case["mask_rle"]))
    assert service.get("/cases", status="corrected").json()["cases"][0]["id"] == case["id"]
    # The same change again names a version that is gone.
    stale = service.review(case["id"], body)
    assert stale.status_code == 409 and "version 2" in stale.json()["detail"]


def test_bad_reviews_get_a_clear_4xx(service, pictures):
    case = service.upload(pictures["dermoscopy"]).json()
    height, width = case["image"]["height"], case["image"]["width"]
    wrong_size = rle_encode(np.zeros((height + 1, width), bool))
    response = service.review(case["id"], {"status": "corrected", "mask_rle": wrong_size, "version": 1})
    assert response.status_code == 422 and f"[{height}, {width}]" in response.json()["detail"]
    short = {"size": [height, width], "counts": [5, 5]}
    assert service.review(case["id"], {"status": "corrected", "mask_rle": short, "version": 1}).status_code == 422
    assert service.review(case["id"], {"status": "corrected", "version": 1}).status_code == 422
    assert service.review(case["id"], {"status": "approved", "version": 1}).status_code == 422
    assert service.review("0" * 32, {"status": "accepted", "version": 1}).status_code == 404
    # A body that is not even text: a 400 in our words, never the framework's.
    garbled = httpx.put(
        f"{service.url}/cases/{case['id']}/review",
        content=b"\xca\xff{",
        headers={**as_("reviewer"), "Content-Type": "application/json"},
    )
    assert garbled.status_code == 400 and "UTF-8 JSON" in garbled.json()["detail"], garbled.text
    assert service.get("/cases/not-an-id").status_code in (404, 422)
    assert service.get(f"/cases/{case['id']}").json()["review"]["version"] == 1


def test_roles_limit_what_a_key_may_do(service, pictures):
    assert service.upload(pictures["dermoscopy"], role="reader").status_code == 403
    case = service.upload(pictures["dermoscopy"], role="reviewer").json()
    refused = service.review(case["id"], {"status": "accepted", "version": 1}, role="reader")
    assert refused.status_code == 403 and "reviewer" in refused.json()["detail"]
    assert httpx.delete(f"{service.url}/cases/{case['id']}", headers=as_("reviewer")).status_code == 403
    assert httpx.get(f"{service.url}/cases").status_code == 401
    assert service.get(f"/cases/{case['id']}", role="reader").status_code == 200


def test_two_reviewers_racing_on_one_case_one_wins_one_gets_409(service, pictures):
    case = service.upload(pictures["dermoscopy"]).json()
    answers, start = {}, threading.Barrier(2)

    def decide(reviewer: str, status: str) -> None:
        start.wait()
        answers[reviewer] = service.review(case["id"], {"status": status, "version": 1}, role=reviewer)

    threads = [
        threading.Thread(target=decide, args=("reviewer", "accepted")),
        threading.Thread(target=decide, args=("second reviewer", "rejected")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers.values()) == [200, 409]
    winner = next(reviewer for reviewer, answer in answers.items() if answer.status_code == 200)
    review = service.get(f"/cases/{case['id']}").json()["review"]
    assert review["version"] == 2 and review["reviewer"] == service.reviewer_id(winner)


def test_delete_removes_the_case_and_its_image_but_not_an_image_another_case_shares(service, pictures, tmp_path):
    unique = io.BytesIO()
    Image.open(io.BytesIO(pictures["dermoscopy"])).rotate(90, expand=True).save(unique, format="PNG")
    alone = service.upload(unique.getvalue()).json()
    assert alone["image"]["media_type"] == "image/png" and alone["image"]["sha256"] in service.stored_images()
    shared = [service.upload(pictures["dermoscopy"]).json() for _ in range(2)]
    for case in (alone, shared[0]):
        assert httpx.delete(f"{service.url}/cases/{case['id']}", headers=as_("admin")).status_code == 204
        assert service.get(f"/cases/{case['id']}").status_code == 404
    assert alone["image"]["sha256"] not in service.stored_images()
    assert shared[1]["image"]["sha256"] in service.stored_images()
    assert service.get(f"/cases/{shared[1]['id']}/image").content == pictures["dermoscopy"]


def test_everything_persists_across_a_restart(service, pictures):
    case = service.upload(pictures["dermoscopy"]).json()
    service.review(case["id"], {"status": "accepted", "version": 1})
    service.stop()
    service.start()
    again = service.get(f"/cases/{case['id']}").json()
    assert again["review"]["status"] == "accepted" and again["review"]["version"] == 2
    assert again["mask_rle"] == case["mask_rle"]
    assert service.get(f"/cases/{case['id']}/image").content == pictures["dermoscopy"]


def test_a_box_drawn_on_a_case_gets_a_proposal_and_the_next_box_costs_only_the_decoder(service, pictures):
    case = service.upload(pictures["dermoscopy"], samples=2).json()
    model_mask = rle_decode(case["mask_rle"])
    rows, columns = np.nonzero(model_mask)
    box = [int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1]
    propose = partial(httpx.post, f"{service.url}/cases/{case['id']}/proposal", headers=as_("reviewer"), timeout=120)
    response = propose(json={"box": box})
    assert response.status_code == 200, response.text
    first = response.json()
    proposal = rle_decode(first["mask_rle"])
    assert proposal.shape == model_mask.shape and first["model"] == "LiteMedSAM" and first["box"] == box
    # A box asks for the object it frames: the proposal lies inside it, and finds the lesion the model found
    # (two models, one lesion: under 0.65 Jaccard would be a failure by the ISIC challenge's line).
    x0, y0, x1, y1 = box
    assert proposal[y0:y1, x0:x1].sum() >= 0.95 * proposal.sum()
    assert (proposal & model_mask).sum() / (proposal | model_mask).sum() >= 0.65
    assert first["timings_ms"]["image_embedding"] > 0
    # No box: the box around the model's own mask, on the embedding kept from the first.
    again = propose()
    assert again.status_code == 200, again.text
    assert again.json()["box"] == box and again.json()["timings_ms"]["image_embedding"] == 0
    assert np.array_equal(rle_decode(again.json()["mask_rle"]), proposal)
    # Nothing is saved until the reviewer sends it.
    assert service.get(f"/cases/{case['id']}").json()["review"]["version"] == 1


def test_a_proposal_with_a_bad_box_or_without_the_reviewer_role_is_refused_in_our_words(service, pictures):
    case = service.upload(pictures["dermoscopy"], samples=2).json()
    url = f"{service.url}/cases/{case['id']}/proposal"
    width = case["image"]["width"]
    for body, words in (
        ({"box": [width + 10, 0, width + 50, 40]}, "must enclose part of the"),
        ({"box": [10, 10, 5, 20]}, "x0 < x1"),
        ({"box": [1, 2, 3]}, "box"),
        ({"box": [0, 0, "wide", 10]}, "box"),
        ({"box": [0, 0, 10, 10], "points": []}, "points"),
    ):
        response = httpx.post(url, json=body, headers=as_("reviewer"), timeout=120)
        assert response.status_code == 422 and words in response.json()["detail"], (body, response.text)
    non_finite = httpx.post(
        url, content=b'{"box": [0, 0, NaN, 10]}', headers={**as_("reviewer"), "Content-Type": "application/json"}
    )
    assert non_finite.status_code == 422 and "box" in non_finite.json()["detail"], non_finite.text
    assert httpx.post(url, json={}, headers=as_("reader"), timeout=60).status_code == 403
    unknown = httpx.post(f"{service.url}/cases/{'0' * 32}/proposal", headers=as_("reviewer"), timeout=60)
    assert unknown.status_code == 404 and "no case" in unknown.json()["detail"]


@pytest.mark.parametrize("kind", DATABASES)
def test_a_kill_during_a_burst_of_uploads_leaves_no_case_without_its_image_nor_an_image_without_its_case(
    kind, request, tmp_path, real_image_path
):
    service = Service(new_database_url(kind, request, tmp_path), tmp_path / "images").start()
    photo = cv2.imread(str(real_image_path))
    stop = threading.Event()

    def upload_distinct_images(worker: int) -> None:
        count = 0
        while not stop.is_set():
            # A different image each time: a new file every time, not the same one again.
            varied = photo.copy()
            varied[0, 0] = (worker, count % 256, count // 256)
            try:
                service.upload(cv2.imencode(".png", varied)[1].tobytes(), samples=1)
            except httpx.TransportError:
                return
            count += 1

    workers = [threading.Thread(target=upload_distinct_images, args=(worker,)) for worker in range(4)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 60
    while len(service.stored_images()) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    service.server.process.send_signal(signal.SIGKILL)
    service.server.process.wait()
    stop.set()
    for worker in workers:
        worker.join()
    service.start(orphan_grace_seconds="0")  # what the kill left is old enough to sweep at once
    try:
        cases = service.get("/cases", limit=200).json()["cases"]
        assert len(cases) >= 5
        named = {case["image"]["sha256"] for case in cases}
        assert named == service.stored_images()
        for case in cases[:3]:
            assert service.get(f"/cases/{case['id']}/image").status_code == 200
    finally:
        service.stop()


def test_a_case_keeps_its_file_name_its_external_id_and_every_verdict(service, pictures):
    """Provenance, to map a case back to a researcher's records, and the audit trail: who said what, when."""
    files = {"file": ("../clinic 3/ISIC 0042.jpg", pictures["dermoscopy"], "image/jpeg")}
    response = httpx.post(
        f"{service.url}/cases",
        files=files,
        params={"seed": 0, "samples": 2, "external_id": "MRN-0042/visit 7"},
        headers=as_("reviewer"),
        timeout=120,
    )
    assert response.status_code == 201, response.text
    case = response.json()
    assert case["image"]["filename"] == "ISIC 0042.jpg", "the name without its folders"
    assert case["external_id"] == "MRN-0042/visit 7"
    assert service.get(f"/cases/{case['id']}").json()["source"] == {
        "filename": "ISIC 0042.jpg",
        "external_id": "MRN-0042/visit 7",
        "dicom": None,  # a picture file has no DICOM source
    }
    longest = service.upload(pictures["dermoscopy"], samples=2, external_id="x" * 200)
    assert longest.status_code == 201 and longest.json()["source"]["external_id"] == "x" * 200
    accepted = service.review(case["id"], {"status": "accepted", "version": 1})
    assert accepted.status_code == 200, accepted.text
    mask = np.zeros((case["image"]["height"], case["image"]["width"]), bool)
    mask[10:40, 20:60] = True
    corrected = service.review(
        case["id"], {"status": "corrected", "mask_rle": rle_encode(mask), "version": 2}, role="second reviewer"
    )
    assert corrected.status_code == 200, corrected.text
    stale = service.review(case["id"], {"status": "rejected", "version": 2})
    assert stale.status_code == 409  # refused changes leave no trace in the history
    history = service.get(f"/cases/{case['id']}/history")
    assert history.status_code == 200, history.text
    events = history.json()["events"]
    assert [(event["version"], event["status"], event["reviewer"]) for event in events] == [
        (1, "pending", None),
        (2, "accepted", service.reviewer_id("reviewer")),
        (3, "corrected", service.reviewer_id("second reviewer")),
    ]
    assert np.array_equal(rle_decode(events[2]["mask_rle"]), mask) and events[1]["mask_rle"] is None
    assert [event["at"] for event in events] == sorted(event["at"] for event in events)


def test_an_external_id_with_control_characters_or_too_long_is_refused_in_our_words(service, pictures):
    for external_id in ("line\nbreak", "x" * 201):
        response = service.upload(pictures["dermoscopy"], samples=2, external_id=external_id)
        assert response.status_code == 422 and "external_id" in response.json()["detail"], response.text
    assert service.get(f"/cases/{'0' * 32}/history").status_code == 404


@pytest.mark.parametrize("kind", DATABASES)
def test_an_empty_database_is_migrated_to_the_current_schema(kind, request, tmp_path):
    url = new_database_url(kind, request, tmp_path)
    engine = connect(url)
    try:
        assert {"cases", "reviews", "review_events", "alembic_version"} <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        connect(url).dispose()  # a second start finds it current and changes nothing
    finally:
        engine.dispose()
    plain = create_engine(url)
    with plain.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM cases")).scalar() == 0
    plain.dispose()


def test_a_case_flagged_not_dermoscopy_goes_to_training_only_when_a_person_confirms_it(service, pictures, tmp_path):
    flagged = service.upload(pictures["portrait"]).json()
    assert flagged["out_of_distribution"] is True
    for status in ("accepted", "corrected"):
        body = {"status": status, "version": 1}
        if status == "corrected":
            body["mask_rle"] = flagged["mask_rle"]
        refused = service.review(flagged["id"], body)
        assert refused.status_code == 409, refused.text
        assert (
            "not dermoscopy" in refused.json()["detail"] and "confirm_out_of_distribution" in refused.json()["detail"]
        )
    assert service.get(f"/cases/{flagged['id']}").json()["review"] == {**flagged["review"]}
    # Rejecting it needs no confirmation: a rejected case never reaches an export.
    other = service.upload(pictures["portrait"], seed=1).json()
    assert service.review(other["id"], {"status": "rejected", "version": 1}).status_code == 200
    confirmed = service.review(flagged["id"], {"status": "accepted", "version": 1, "confirm_out_of_distribution": True})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["review"]["out_of_distribution_confirmed"] is True
    # A verdict from before confirmations were recorded (schema 0003): accepted, flagged, unconfirmed.
    legacy = service.upload(pictures["portrait"], seed=2).json()
    body = {"status": "accepted", "version": 1, "confirm_out_of_distribution": True}
    assert service.review(legacy["id"], body).status_code == 200
    engine = create_engine(service.database_url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE reviews SET out_of_distribution_confirmed = false WHERE case_id = :id"), {"id": legacy["id"]}
        )
    engine.dispose()
    # A confirmed case is in every export: the reviewer said it is dermoscopy. An unconfirmed one only when asked.
    lesionseg = [sys.executable, "-m", "lesionseg.cli", "export-reviews"]
    location = ["--database-url", service.database_url, "--storage-dir", str(service.storage)]
    for output, extra, legacy_kept in (
        (tmp_path / "plain", [], False),
        (tmp_path / "all", ["--include-out-of-distribution"], True),
    ):
        exported = subprocess.run([*lesionseg, str(output), *location, *extra], capture_output=True, text=True)
        assert exported.returncode == 0, exported.stderr
        with open(output / "manifest.csv", newline="") as stream:
            rows = {row["id"]: row for row in csv.DictReader(stream)}
        assert rows[flagged["id"]]["out_of_distribution_confirmed"] == "True"
        assert (legacy["id"] in rows) is legacy_kept
        assert other["id"] not in rows
        assert ("that no reviewer confirmed" in exported.stdout) is not legacy_kept


def test_reviewed_cases_export_as_a_training_set_that_trains(service, pictures, tmp_path):
    for index in range(4):  # accepted and corrected cases, two of each
        case = service.upload(pictures["dermoscopy"], seed=10 + index).json()
        height, width = case["image"]["height"], case["image"]["width"]
        corrected = np.zeros((height, width), bool)
        corrected[: height // 2, : width // 2] = True
        body = {"status": "corrected", "mask_rle": rle_encode(corrected), "version": 1} if index % 2 else None
        service.review(case["id"], body or {"status": "accepted", "version": 1})
    output = tmp_path / "reviewed"
    lesionseg = [sys.executable, "-m", "lesionseg.cli"]
    location = ["--database-url", service.database_url, "--storage-dir", str(service.storage)]
    exported = subprocess.run([*lesionseg, "export-reviews", str(output), *location], capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr
    with open(output / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    reviewed = [  # a flagged case no reviewer confirmed as dermoscopy stays out unless --include-out-of-distribution
        case
        for status in ("accepted", "corrected")
        for case in service.get("/cases", status=status, limit=200).json()["cases"]
        if not case["out_of_distribution"] or case["review"]["out_of_distribution_confirmed"]
    ]
    assert sorted(row["id"] for row in rows) == sorted(case["id"] for case in reviewed)
    for row in rows:
        # Its history: the upload's pending, then each verdict, oldest first.
        events = service.get(f"/cases/{row['id']}/history").json()["events"]
        assert [entry.split()[:2] for entry in row["history"].split("; ")] == [
            [str(event["version"]), event["status"]] for event in events
        ]
        mask = cv2.imread(str(output / "masks" / f"{row['id']}_segmentation.png"), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(output / "images" / f"{row['id']}.jpg"))
        assert mask.shape == image.shape[:2] == (int(row["height"]), int(row["width"]))
        served = decode_png(service.get(f"/cases/{row['id']}/mask").content)
        assert np.array_equal(mask, served), row["status"]
        assert row["reviewer"] in {service.reviewer_id(role) for role in KEYS}
    assert len(discover_pairs(output)) == len(rows)
    # Case ids are random, so is which of these few falls in the validation split: a seed that splits them.
    records = discover_pairs(output)
    split_seed = next(
        seed
        for seed in range(1000)
        if all(Split.for_training(0.6, seed).select(records, subset) for subset in ("training", "validation"))
    )
    trained = subprocess.run(
        [*lesionseg, "train", "--data-root", str(tmp_path), "--sets", "reviewed", "--output-directory",
         str(tmp_path / "run"), "--epochs", "1", "--samples-per-epoch", "8", "--batch-size", "4",
         "--held-out-fraction", "0.6", "--split-seed", str(split_seed)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_cases_older_than_the_retention_period_are_deleted_with_their_images(tmp_path, real_image_path):
    """The case is made old in the database itself (its upload time moved back two days), not waited for."""
    database_url = f"sqlite:///{tmp_path / 'cases.db'}"
    service = Service(database_url, tmp_path / "images", retention_days="1").start()
    try:
        rotated = io.BytesIO()
        Image.open(real_image_path).rotate(180).save(rotated, format="PNG")
        old = service.upload(rotated.getvalue()).json()
        engine = create_engine(database_url)
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE cases SET created_at = :moment WHERE id = :id"),
                {"moment": datetime.now(UTC) - timedelta(days=2), "id": old["id"]},
            )
        engine.dispose()
        new = service.upload(real_image_path.read_bytes())  # adding a case expires old ones
        assert new.status_code == 201
        assert service.get(f"/cases/{old['id']}").status_code == 404
        assert service.get(f"/cases/{new.json()['id']}").status_code == 200
        assert service.stored_images() == {new.json()["image"]["sha256"]}
    finally:
        service.stop()


@pytest.mark.parametrize("days", ["1e6", "1e-9", "0", "-1", "nan"])
def test_a_retention_period_that_is_no_period_is_refused_at_start_up_in_our_words(tmp_path, days):
    started = subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", "serve", "--port", "1"],
        env={**os.environ, "LESIONSEG_RETENTION_DAYS": days, "LESIONSEG_DATABASE_URL": "sqlite://"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 2, started.stderr[-2000:]
    assert "LESIONSEG_RETENTION_DAYS" in started.stderr and "Traceback" not in started.stderr

"""Hostile input to the worklist, on a real server and database (SQLite and PostgreSQL): numbers past the
database's integers, cursors it cannot store, masks of empty runs, bodies too large, bytes after a picture's
end, a full disk, and reviewer identifiers that give nothing away."""

import asyncio
import base64
import hashlib
import json
import shutil

import cv2
import httpx
import numpy as np
import pytest
from tests.reviews.conftest import DATABASES, new_database_url
from tests.reviews.test_cases_http import KEYS, Service, as_

from lesionseg.imaging.regions import rle_encode

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=DATABASES)
def service(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"limits-{request.param}")
    running = Service(new_database_url(request.param, request, folder), folder / "images").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def case(service, real_image_path) -> dict:
    return service.upload(real_image_path.read_bytes(), samples=1).json()


@pytest.mark.parametrize("version", [2**31, 2**63, 2**64, -1, 0])
def test_a_version_past_the_databases_integers_is_a_422(service, case, version):
    response = service.review(case["id"], {"status": "accepted", "version": version})
    assert response.status_code == 422 and "version" in response.json()["detail"]


@pytest.mark.parametrize(
    "values", [[True, 0.5, "abc\x00def"], ["2026-01-01T00:00:00+00:00\x00", "x"], [True, float("nan"), "a"]]
)
def test_a_cursor_holding_what_the_database_cannot_store_is_a_422(service, case, values):
    cursor = base64.urlsafe_b64encode(json.dumps(values).encode()).decode()
    order = "uncertainty" if len(values) == 3 else "newest"
    response = service.get("/cases", cursor=cursor, order=order)
    assert response.status_code == 422 and "cursor" in response.json()["detail"]


def test_a_mask_of_empty_runs_is_refused_and_health_is_answered(service, case):
    height, width = case["image"]["height"], case["image"]["width"]
    counts = [0] * 500_000 + [height * width]
    body = {"status": "corrected", "version": 1, "mask_rle": {"size": [height, width], "counts": counts}}
    response = service.review(case["id"], body)
    assert response.status_code == 422 and "at least one pixel" in response.json()["detail"]
    assert httpx.get(f"{service.url}/health").status_code == 200


def test_a_review_body_over_the_json_limit_is_a_413_before_it_is_parsed(service, case):
    padding = " " * (5 * 1024 * 1024)
    response = httpx.put(
        f"{service.url}/cases/{case['id']}/review",
        content=f'{{"status": "accepted", "version": 1{padding}}}',
        headers={**as_("reviewer"), "content-type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_bytes_after_a_jpeg_end_are_not_kept(service, real_image_path):
    photo = real_image_path.read_bytes()
    rotated = cv2.imencode(".jpg", cv2.rotate(cv2.imread(str(real_image_path)), cv2.ROTATE_90_CLOCKWISE))[1]
    for original in (photo, rotated.tobytes()):
        response = service.upload(original + b"\x00" * 1_000_000, samples=1)
        assert response.status_code == 201, response.text
        kept = response.json()
        assert kept["image"]["bytes"] == len(original)
        assert kept["image"]["sha256"] == hashlib.sha256(original).hexdigest()
        assert service.get(f"/cases/{kept['id']}/image").content == original


def test_reviewer_identifiers_are_not_a_plain_hash_of_the_key_and_survive_a_restart(service, real_image_path):
    case = service.upload(real_image_path.read_bytes(), samples=1, seed=41).json()
    reviewed = service.review(case["id"], {"status": "accepted", "version": 1}).json()
    identifier = reviewed["review"]["reviewer"]
    assert identifier == service.reviewer_id("reviewer")
    assert identifier not in hashlib.sha256(KEYS["reviewer"].encode()).hexdigest()
    service.stop()
    service.start()
    assert service.get(f"/cases/{case['id']}").json()["review"]["reviewer"] == identifier


def test_a_disk_that_would_fall_under_the_free_space_quota_gets_507(tmp_path, real_image_path):
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    service = Service(
        f"sqlite:///{tmp_path / 'cases.db'}", tmp_path / "images", storage_min_free_mb=str(free_mb + 1024)
    ).start()
    try:
        response = service.upload(real_image_path.read_bytes(), samples=1)
        assert response.status_code == 507 and "no room" in response.json()["detail"]
        assert service.get("/cases").json()["cases"] == [] and service.stored_images() == set()
    finally:
        service.stop()


def test_an_export_skips_a_case_whose_image_is_gone_refuses_links_and_keeps_no_rejected_case(tmp_path, real_image_path):
    import subprocess
    import sys

    service = Service(f"sqlite:///{tmp_path / 'cases.db'}", tmp_path / "images").start()
    try:
        cases = []
        for seed in range(3):
            photo = cv2.imread(str(real_image_path))
            photo[0, 0] = (seed, 1, 2)
            cases.append(service.upload(cv2.imencode(".png", photo)[1].tobytes(), samples=1, seed=seed).json())
        height, width = cases[0]["image"]["height"], cases[0]["image"]["width"]
        mask = np.zeros((height, width), bool)
        mask[: height // 2] = True
        for case in cases[:2]:
            service.review(case["id"], {"status": "accepted", "version": 1})
        service.review(cases[2]["id"], {"status": "corrected", "version": 1, "mask_rle": rle_encode(mask)})
        (tmp_path / "images" / cases[1]["image"]["sha256"][:2] / cases[1]["image"]["sha256"][2:4]
         / cases[1]["image"]["sha256"]).unlink()  # fmt: skip
        command = [sys.executable, "-m", "lesionseg.cli", "export-reviews"]
        location = ["--database-url", service.database_url, "--storage-dir", str(service.storage)]
        output = tmp_path / "export"
        first = subprocess.run([*command, str(output), *location], capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        assert f"skipped case {cases[1]['id']}" in first.stderr
        assert sorted(path.stem for path in (output / "images").iterdir()) == sorted([cases[0]["id"], cases[2]["id"]])

        again = subprocess.run([*command, str(output), *location], capture_output=True, text=True)
        assert again.returncode == 2 and "--replace" in again.stderr
        service.review(cases[0]["id"], {"status": "rejected", "version": 2})
        replaced = subprocess.run([*command, str(output), "--replace", *location], capture_output=True, text=True)
        assert replaced.returncode == 0, replaced.stderr
        assert [path.stem for path in (output / "images").iterdir()] == [cases[2]["id"]]
        assert [path.name for path in (output / "masks").iterdir()] == [f"{cases[2]['id']}_segmentation.png"]

        linked = tmp_path / "linked"
        linked.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        refused = subprocess.run([*command, str(linked), *location], capture_output=True, text=True)
        assert refused.returncode == 2 and "symbolic link" in refused.stderr
        assert not (tmp_path / "elsewhere").exists()
    finally:
        service.stop()


def test_proposals_at_once_stay_within_the_budget_and_their_memory_comes_back(tmp_path, isic_validation_pairs):
    """One proposal took a 210 MB worker to 930 MB and four at once to 1.86 GB, kept while idle: ONNX Runtime's
    arena. Four cases (four encodings: a kept embedding would cost nothing) asked at once, on a budget that
    admits one encoder at a time."""
    from tests.api.test_memory import SLACK_MB, resident_megabytes

    budget_mb = 512
    service = Service(
        f"sqlite:///{tmp_path / 'cases.db'}", tmp_path / "images", memory_budget_mb=str(budget_mb)
    ).start()
    try:
        cases = [
            service.upload(record.image_path.read_bytes(), samples=1).json() for record in isic_validation_pairs[:5]
        ]
        pid = service.server.process.pid
        # The first proposal loads LiteMedSAM's graphs, which stay: idle is measured after it.
        first = httpx.post(f"{service.url}/cases/{cases[0]['id']}/proposal", headers=as_("reviewer"), timeout=600)
        assert first.status_code == 200, first.text
        idle = resident_megabytes(pid)

        async def at_once() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=service.url, timeout=600, headers=as_("reviewer")) as client:
                return await asyncio.gather(*(client.post(f"/cases/{case['id']}/proposal") for case in cases[1:]))

        responses = asyncio.run(at_once())
        assert [response.status_code for response in responses] == [200] * 4, [r.text for r in responses]
        peak = resident_megabytes(pid, "VmHWM")
        assert peak - idle <= budget_mb + SLACK_MB, f"idle {idle:.0f} MB, peak {peak:.0f} MB"
        now = resident_megabytes(pid)
        assert now - idle <= 150, f"the proposals' memory was kept: idle {idle:.0f} MB, now {now:.0f} MB"
    finally:
        service.stop()

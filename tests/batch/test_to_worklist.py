"""`lesionseg add-cases`: a folder of real pictures into a real service's worklist over HTTP, each case named by
its file, a broken file reported without stopping the rest, a rerun adding nothing, a missing key one line."""

import os
import shutil
import subprocess
import sys

import pytest
from tests.conftest import free_port
from tests.reviews.test_cases_http import KEYS, Service

# Slow tier (`make test-fast` leaves it out): a real server, and the CLI in its own process.
pytestmark = pytest.mark.slow


def add_cases(folder, url: str, key: str | None) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if name != "LESIONSEG_API_KEY"}
    if key:
        environment["LESIONSEG_API_KEY"] = key
    command = [sys.executable, "-m", "lesionseg.cli", "add-cases", str(folder), "--url", url, "--samples", "2"]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)


def test_a_folder_goes_into_the_worklist_once_each_picture_named_by_its_file(tmp_path, isic_validation_pairs):
    service = Service(f"sqlite:///{tmp_path / 'cases.db'}", tmp_path / "images").start()
    try:
        folder = tmp_path / "clinic"
        folder.mkdir()
        for record in isic_validation_pairs[:3]:
            shutil.copy(record.image_path, folder / f"visit-{record.identifier}.jpg")
        (folder / "broken.jpg").write_bytes(b"not a picture at all")

        refused = add_cases(folder, service.url, None)
        assert refused.returncode == 2 and "LESIONSEG_API_KEY" in refused.stderr
        assert refused.stderr.strip().splitlines()[-1].startswith("lesionseg add-cases: error:")

        first = add_cases(folder, service.url, KEYS["reviewer"])
        assert first.returncode == 1, first.stderr  # the broken file failed; the others went in
        assert "3 added" in first.stdout and "1 failed" in first.stdout and "not added broken" in first.stderr
        cases = service.get("/cases", limit=50).json()["cases"]
        assert sorted(case["external_id"] for case in cases) == sorted(
            f"visit-{record.identifier}" for record in isic_validation_pairs[:3]
        )
        assert all(case["image"]["filename"].startswith("visit-") for case in cases)

        (folder / "broken.jpg").unlink()
        again = add_cases(folder, service.url, KEYS["reviewer"])
        assert again.returncode == 0, again.stderr
        assert "0 added" in again.stdout and "3 already there" in again.stdout
        assert len(service.get("/cases", limit=50).json()["cases"]) == 3
    finally:
        service.stop()


def test_no_service_at_the_address_is_one_line(tmp_path, real_image_path):
    shutil.copy(real_image_path, tmp_path / "one.jpg")
    address = f"http://127.0.0.1:{free_port()}"  # free: nothing listens there
    failed = add_cases(tmp_path, address, KEYS["reviewer"])
    assert failed.returncode == 2 and f"cannot reach {address}" in failed.stderr

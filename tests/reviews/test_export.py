"""`export-reviews` never deletes what is not an export: the worklist's database and images, the folders they
live in, the working folder, `/` or a home folder are refused; OUT is never missing, even when the export is
killed mid-way; what a killed export left beside OUT is swept by the next one. A real worklist on SQLite,
with cases the real model segmented, exported by the real command."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lesionseg import load
from lesionseg.reviews.cases import CaseStore
from lesionseg.reviews.export import ExportRefused, export_reviews
from lesionseg.segmenter import PredictionRequest

EXPORT = [sys.executable, "-m", "lesionseg.cli", "export-reviews"]


@pytest.fixture(scope="module")
def worklist(tmp_path_factory, real_image_path) -> Path:
    """A working folder laid out as the quick start leaves it: cases.db and lesionseg-images side by side,
    with two accepted cases."""
    folder = tmp_path_factory.mktemp("worklist")
    store = CaseStore.open(f"sqlite:///{folder / 'cases.db'}", folder / "lesionseg-images")
    segmenter, data = load(), real_image_path.read_bytes()
    request = PredictionRequest(samples=1, seed=0)
    for seed in range(2):
        case = store.add(data + bytes([seed]), "image/jpeg", segmenter.predict(data, request), request)
        store.review(case["id"], "accepted", None, 1, None)
    store.close()
    return folder


def everything_in(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_size for path in folder.rglob("*") if path.is_file()}


def location(worklist: Path) -> list[str]:
    return ["--database-url", f"sqlite:///{worklist / 'cases.db'}", "--storage-dir", str(worklist / "lesionseg-images")]


def run_export(worklist: Path, output: str, *extra: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EXPORT, output, "--replace", *location(worklist), *extra], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.slow
@pytest.mark.parametrize("output", [".", "cases.db", "lesionseg-images", "lesionseg-images/inside", "/", "~"])
def test_an_export_never_replaces_the_worklist_or_a_home_or_root_folder(worklist, output):
    before = everything_in(worklist)
    refused = run_export(worklist, os.path.expanduser(output), cwd=worklist)
    assert refused.returncode == 2, refused.stdout
    assert "export-reviews: error:" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # Nothing of the worklist went, and no staging folder was left anywhere near it.
    after = everything_in(worklist)
    assert {name: size for name, size in after.items() if not name.startswith("cases.db")} == {
        name: size for name, size in before.items() if not name.startswith("cases.db")
    }
    assert "cases.db" in after and not list(Path("/").glob(".*partial-*"))


def test_a_folder_holding_the_worklist_is_refused_in_process(worklist):
    store = CaseStore.open(f"sqlite:///{worklist / 'cases.db'}", worklist / "lesionseg-images")
    try:
        for output in (worklist, worklist.parent, worklist / "lesionseg-images", Path.home(), Path("/")):
            with pytest.raises(ExportRefused, match="never replace"):
                export_reviews(store, output, replace=True)
        summary = export_reviews(store, worklist / "exports" / "today", replace=True)
        assert summary.written == 2
    finally:
        store.close()


def test_stale_staging_is_swept_and_a_parked_export_put_back(worklist, tmp_path):
    output = tmp_path / "export"
    # What the earlier two-rename swap left when killed between its renames: OUT missing, the old export parked.
    parked = tmp_path / ".export.previous-killed" / "export"
    (parked / "images").mkdir(parents=True)
    (tmp_path / ".export.partial-killed" / "images").mkdir(parents=True)
    store = CaseStore.open(f"sqlite:///{worklist / 'cases.db'}", worklist / "lesionseg-images")
    try:
        with pytest.raises(ExportRefused, match="--replace"):
            export_reviews(store, output)  # the parked export went back to OUT, which is not empty
        assert (output / "images").is_dir()
        assert export_reviews(store, output, replace=True).written == 2
    finally:
        store.close()
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith("lock")) == ["export"]
    assert len(list((output / "images").iterdir())) == 2


@pytest.mark.slow
def test_an_export_killed_at_any_moment_never_leaves_out_missing(worklist, tmp_path):
    output = tmp_path / "export"
    assert run_export(worklist, str(output)).returncode == 0
    # Kills spread over the command's whole run, from Python's start to the swap (about 2-6 s on a busy CPU).
    for delay in [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0]:
        process = subprocess.Popen([*EXPORT, str(output), "--replace", *location(worklist)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and process.poll() is None:
            assert (output / "manifest.csv").is_file()  # whole at every moment, not only after the kill
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert len(list((output / "images").iterdir())) == 2 and (output / "manifest.csv").is_file()
    finished = run_export(worklist, str(output))
    assert finished.returncode == 0, finished.stderr
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith("lock")) == ["export"]

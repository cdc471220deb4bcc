"""`lesionseg batch` end to end on real images, run as a user runs it, on both engines."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lesionseg.data.pairs import PairRecord

# Slow tier (`make test-fast` leaves it out): each test starts a local Ray cluster.
pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
LESIONSEG = Path(sys.executable).parent / "lesionseg"
IMAGES = 8


def run_batch(input_folder: Path, output: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LESIONSEG), "batch", str(input_folder), str(output), *options], capture_output=True, text=True, timeout=600
    )


def read_rows(output: Path) -> list[dict]:
    with open(output / "results.csv", newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def archive(isic_validation_pairs: list[PairRecord], tmp_path_factory) -> Path:
    """Real ISIC photos (linked, never copied) and one file that is not an image."""
    folder = tmp_path_factory.mktemp("archive")
    for record in isic_validation_pairs[:IMAGES]:
        (folder / record.image_path.name).symlink_to(record.image_path.resolve())
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    return folder


@pytest.fixture(scope="module")
def local_output(archive: Path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("local") / "output"
    completed = run_batch(archive, output)
    assert completed.returncode == 3, completed.stderr  # one image failed
    return output


def test_local_engine_writes_isic_masks_at_each_images_size_and_a_row_per_image(
    archive: Path, local_output: Path
) -> None:
    rows = {row["identifier"]: row for row in read_rows(local_output)}
    assert len(rows) == IMAGES + 1
    for image in sorted(archive.glob("ISIC_*.jpg")):
        row = rows[image.stem]
        height, width = cv2.imread(str(image)).shape[:2]
        mask = cv2.imread(str(local_output / "masks" / f"{image.stem}_segmentation.png"), cv2.IMREAD_UNCHANGED)
        uncertainty = cv2.imread(str(local_output / "uncertainty" / f"{image.stem}_uncertainty.png"), -1)
        assert row["status"] == "ok" and row["error"] == ""
        assert mask.shape == uncertainty.shape == (height, width)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert uncertainty.dtype == np.uint16
        assert int(row["lesion_area_pixels"]) == int((mask == 255).sum()) > 0
        assert 0.0 <= float(row["uncertainty_score"]) <= 1.0
        assert row["review_recommended"] in ("True", "False")
        assert row["out_of_distribution"] == str(float(row["ood_score"]) >= 1.0) and float(row["ood_score"]) > 0
        assert float(row["total_ms"]) >= float(row["inference_ms"]) > 0
    # The gate flags about 2 % of real dermoscopy; among these eight, ISIC_0000224 (a lesion with a
    # grid-like pattern) is one of them.
    assert sum(row["out_of_distribution"] == "True" for row in rows.values()) <= 1


def test_a_corrupt_image_is_recorded_with_its_error_and_does_not_stop_the_job(local_output: Path) -> None:
    row = next(row for row in read_rows(local_output) if row["identifier"] == "corrupt")
    assert row["status"] == "failed"
    assert row["error"].startswith("the upload is not an image format we can read")
    assert not (local_output / "masks" / "corrupt_segmentation.png").exists()
    summary = json.loads((local_output / "summary.json").read_text())
    assert (summary["ok"], summary["failed"]) == (IMAGES, 1)
    rows = read_rows(local_output)
    for flag in ("review_recommended", "out_of_distribution"):
        assert summary[flag] == sum(row[flag] == "True" for row in rows), flag


def test_a_rerun_skips_finished_images_retries_failed_ones_and_keeps_one_row_each(
    archive: Path, local_output: Path
) -> None:
    finished_mask = local_output / "masks" / f"{sorted(archive.glob('ISIC_*.jpg'))[0].stem}_segmentation.png"
    written_at = finished_mask.stat().st_mtime_ns
    completed = run_batch(archive, local_output)
    assert completed.returncode == 3, completed.stderr
    summary = json.loads((local_output / "summary.json").read_text())
    assert (summary["already_finished"], summary["ok"], summary["failed"]) == (IMAGES, 0, 1)
    assert finished_mask.stat().st_mtime_ns == written_at
    identifiers = [row["identifier"] for row in read_rows(local_output)]
    assert sorted(identifiers) == sorted(set(identifiers)) and len(identifiers) == IMAGES + 1


def test_a_rerun_with_other_settings_into_the_same_folder_is_refused(archive: Path, local_output: Path) -> None:
    completed = run_batch(archive, local_output, "--seed", "7")
    assert completed.returncode == 2
    assert "holds the results of another job" in completed.stderr and "seed 0 -> 7" in completed.stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [(["--samples", "0"], "samples must be between 1 and 64"), (["--threshold", "1.5"], "threshold must be between")],
)
def test_invalid_settings_stop_the_job_before_it_starts(archive: Path, tmp_path: Path, option, message) -> None:
    completed = run_batch(archive, tmp_path / "output", *option)
    assert completed.returncode == 2 and message in completed.stderr
    assert not (tmp_path / "output").exists()


def test_more_images_in_flight_give_the_same_masks(archive: Path, local_output: Path, tmp_path: Path) -> None:
    """All nine at once, as on a GPU machine's cores: their inference shares larger runs, to the same masks."""
    output = tmp_path / "wide"
    completed = run_batch(archive, output, "--in-flight", str(IMAGES + 1))
    assert completed.returncode == 3, completed.stderr
    for mask in (local_output / "masks").iterdir():
        assert (output / "masks" / mask.name).read_bytes() == mask.read_bytes()
    refused = run_batch(archive, tmp_path / "never", "--in-flight", "0")
    assert refused.returncode == 2 and "--in-flight: must be a whole number of 1 or more" in refused.stderr


def test_ray_engine_on_a_local_cluster_gives_the_same_masks_and_rows(
    archive: Path, local_output: Path, tmp_path: Path
) -> None:
    output = tmp_path / "ray"
    completed = run_batch(archive, output, "--engine", "ray")
    assert completed.returncode == 3, completed.stderr
    local_rows = {row["identifier"]: row for row in read_rows(local_output)}
    ray_rows = {row["identifier"]: row for row in read_rows(output)}
    assert ray_rows.keys() == local_rows.keys()
    assert ray_rows["corrupt"]["status"] == "failed"
    for identifier, row in ray_rows.items():
        assert row["lesion_area_pixels"] == local_rows[identifier]["lesion_area_pixels"]
    for mask in (local_output / "masks").iterdir():
        assert (output / "masks" / mask.name).read_bytes() == mask.read_bytes()
    # Computed in Ray's actor processes (at most one per core here), never in the driver, as the local run is.
    ray_workers = {row["worker"] for row in ray_rows.values() if row["status"] == "ok"}
    local_workers = {row["worker"] for row in local_rows.values() if row["status"] == "ok"}
    assert ray_workers and ray_workers.isdisjoint(local_workers)
    assert len(ray_workers) <= (os.cpu_count() or 1)


def test_ray_job_survives_a_killed_worker_with_every_image_written_once(data_root: Path, tmp_path: Path) -> None:
    """The same script as `make batch-fault-check` (2,000 images), on 40."""
    report = tmp_path / "report.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "benchmarks" / "batch_fault.py"),
            "--data-root",
            str(data_root),
            "--images",
            "40",
            "--kill-after-rows",
            "6",
            "--timeout",
            "500",
            "--output",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = json.loads(report.read_text())
    assert completed.returncode == 0, completed.stdout + result["log"]
    assert result["killed_pid"] is not None
    assert result["images_with_one_row"] == result["rows"] == 40 and result["rows_not_ok"] == 0
    assert result["masks"] == result["uncertainty_maps"] == 40 and result["expected_files_present"]


# Any import of torch, torchvision or timm fails in this process, as in the ONNX-only install.
TORCH_FREE_BATCH = (
    "import sys\n"
    "for name in ('torch', 'torchvision', 'timm', 'safetensors'):\n"
    "    sys.modules[name] = None\n"
    "from lesionseg.cli import main\n"
    "main(['batch', sys.argv[1], sys.argv[2], '--backend', 'onnx'])\n"
)


def test_onnx_batch_runs_without_torch_and_gives_the_same_masks(archive: Path, local_output: Path, tmp_path: Path):
    output = tmp_path / "onnx"
    completed = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_BATCH, str(archive), str(output)], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 3, completed.stderr[-4000:]
    assert json.loads((output / "job.json").read_text())["backend"] == "onnx"
    for mask in (local_output / "masks").iterdir():
        pytorch_mask = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        onnx_mask = cv2.imread(str(output / "masks" / mask.name), cv2.IMREAD_GRAYSCALE)
        assert (pytorch_mask != onnx_mask).mean() < 1e-4, "masks agree but for a rare pixel at exactly 0.5"


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as stream:
        csv.writer(stream).writerows([("path", "identifier"), *rows])
    return path


def test_hostile_identifiers_become_failed_rows_and_nothing_is_written_outside_the_output(
    archive: Path, tmp_path: Path
) -> None:
    image = str(sorted(archive.glob("ISIC_*.jpg"))[0])
    manifest = write_manifest(
        tmp_path / "manifest.csv",
        [
            (image, "../../escaped"),
            (image, "dup"),
            (image, "./dup"),
            (image, "Dup"),
            (image, "x" * 300),
            (image, "nul\x00byte"),
            (image, "fine"),
        ],
    )
    output = tmp_path / "deep" / "er" / "output"
    completed = run_batch(manifest, output)
    assert completed.returncode == 3, completed.stderr
    rows = read_rows(output)
    assert [row["status"] for row in rows].count("ok") == 2 and len(rows) == 7
    assert {row["identifier"] for row in rows if row["status"] == "ok"} == {"dup", "fine"}
    failed = {row["identifier"][:20]: row["error"] for row in rows if row["status"] == "failed"}
    assert "path separator" in failed["../../escaped"] and "path separator" in failed["./dup"]
    assert "same output files as 'dup'" in failed["Dup"]
    assert "longer than 128" in failed["x" * 20] and "control" in failed["nul\\x00byte"]
    written = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    assert all(str(path).startswith(("deep/er/output/", "manifest.csv")) for path in written), written
    assert sorted(path.name for path in (output / "masks").iterdir()) == [
        "dup_segmentation.png",
        "fine_segmentation.png",
    ]
    assert json.loads((output / "summary.json").read_text())["failed"] == 5


def test_a_job_whose_every_image_fails_exits_4(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"not a picture at all")
    completed = run_batch(folder, tmp_path / "output")
    assert completed.returncode == 4, completed.stderr
    assert "2 images failed" in completed.stdout


def test_an_empty_archive_is_an_error_not_a_finished_job(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    completed = run_batch(tmp_path / "empty", tmp_path / "output")
    assert completed.returncode == 2 and "no images in" in completed.stderr


def test_outputs_that_cannot_be_written_become_failed_rows_not_a_crash(archive: Path, tmp_path: Path) -> None:
    output = tmp_path / "output"
    output.mkdir()
    (output / "masks").write_text("a file where the masks folder should be")
    completed = run_batch(archive, output)
    assert completed.returncode == 4, completed.stderr
    rows = read_rows(output)
    assert len(rows) == IMAGES + 1 and {row["status"] for row in rows} == {"failed"}
    assert sum("the outputs could not be written" in row["error"] for row in rows) == IMAGES


def test_a_coverage_job_writes_larger_masks_than_a_threshold_job(archive: Path, local_output: Path, tmp_path: Path):
    output = tmp_path / "coverage"
    completed = run_batch(archive, output, "--coverage", "0.95")
    assert completed.returncode == 3, completed.stderr  # the corrupt file, as before
    assert json.loads((output / "job.json").read_text())["coverage"] == 0.95
    plain = {row["identifier"]: int(row["lesion_area_pixels"] or 0) for row in read_rows(local_output)}
    covered = {row["identifier"]: int(row["lesion_area_pixels"] or 0) for row in read_rows(output)}
    assert all(covered[identifier] >= plain[identifier] for identifier in plain)
    assert sum(covered.values()) > sum(plain.values())


def test_results_cells_a_spreadsheet_would_run_as_formulas_are_written_as_text(archive: Path, tmp_path: Path) -> None:
    image = str(sorted(archive.glob("ISIC_*.jpg"))[0])
    manifest = write_manifest(tmp_path / "manifest.csv", [(image, "=HYPERLINK(1)"), (image, "+1"), (image, "@a")])
    output = tmp_path / "output"
    for _ in range(2):  # a rerun reads the table back and finds every image finished
        completed = run_batch(manifest, output)
        assert completed.returncode == 0, completed.stderr
        rows = read_rows(output)
        assert sorted(row["identifier"] for row in rows) == ["'+1", "'=HYPERLINK(1)", "'@a"]
        assert all(row["status"] == "ok" for row in rows)
    assert sorted(path.name for path in (output / "masks").iterdir())[0] == "+1_segmentation.png"


def test_overlays_asked_for_on_a_rerun_are_made_for_the_images_that_lack_them(archive: Path, tmp_path: Path) -> None:
    """`--overlay`: an 8-bit picture per image to look through (the 16-bit uncertainty map is data, nearly
    black in a viewer). A finished job rerun with `--overlay` makes each image's overlay, as the rows without
    one are unfinished."""
    output = tmp_path / "output"
    assert run_batch(archive, output).returncode == 3
    assert not (output / "overlays").exists()
    again = run_batch(archive, output, "--overlay")
    assert again.returncode == 3, again.stderr
    for image in sorted(archive.glob("ISIC_*.jpg")):
        overlay = cv2.imread(str(output / "overlays" / f"{image.stem}_overlay.png"), cv2.IMREAD_UNCHANGED)
        assert overlay.dtype == np.uint8 and overlay.shape[:2] == cv2.imread(str(image)).shape[:2]
    assert len(read_rows(output)) == IMAGES + 1  # still one row an image

"""The `lesionseg` command as a user runs it, in a subprocess, on real images."""

import json
import os
import subprocess
import sys

import cv2
import pytest
from PIL import Image
from tests.conftest import free_port

import lesionseg

# Slow tier (`make test-fast` leaves it out): each test runs the lesionseg command in its own process on real images.
pytestmark = pytest.mark.slow


def run(*arguments, check=True):
    return subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", *arguments], capture_output=True, text=True, check=check
    )


def test_predict_writes_mask_uncertainty_and_combined_at_the_image_size(original_size_image_path, tmp_path):
    run("predict", str(original_size_image_path), "--out", str(tmp_path), "--samples", "8")
    width, height = Image.open(original_size_image_path).size
    stem = original_size_image_path.stem
    mask = cv2.imread(str(tmp_path / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
    uncertainty = cv2.imread(str(tmp_path / f"{stem}_uncertainty.png"), cv2.IMREAD_UNCHANGED)
    combined = cv2.imread(str(tmp_path / f"{stem}_combined.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (height, width) and set(mask.flatten().tolist()) <= {0, 255}
    assert uncertainty.shape == (height, width) and uncertainty.dtype.name == "uint16"
    assert combined.shape == (height, 2 * width, 3)


def test_predict_reports_each_image_as_a_table_row_or_a_json_line(real_image_path, tmp_path):
    """What a person reads, and what a pipe reads: the same facts as the server's JSON for that image."""
    table = run("predict", str(real_image_path), "--out", str(tmp_path / "table"), "--samples", "4").stdout
    header, row = table.strip().splitlines()
    assert header.split()[:3] == ["image", "lesion", "%"]
    assert row.startswith(real_image_path.name) and f"{real_image_path.stem}_mask.png" in row
    lines = run("predict", str(real_image_path), "--out", str(tmp_path / "json"), "--samples", "4", "--json").stdout
    (report,) = [json.loads(line) for line in lines.strip().splitlines()]
    expected = lesionseg.load().predict(real_image_path, samples=4, seed=0).to_json()  # auto, as the command
    for key in ("lesion_area_fraction", "review_recommended", "out_of_distribution", "width", "height", "seed"):
        assert report[key] == expected[key], key
    assert report["uncertainty_score"] == pytest.approx(expected["uncertainty_score"], rel=1e-6)
    assert [os.path.basename(path) for path in report["files"]] == [
        f"{real_image_path.stem}_{suffix}.png" for suffix in ("mask", "uncertainty", "combined")
    ]
    assert f"{100 * report['lesion_area_fraction']:.1f}" in row


def test_predict_reports_a_bad_file_and_fails(tmp_path):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello")
    result = run("predict", str(bad), "--out", str(tmp_path / "out"), check=False)
    assert result.returncode == 1
    assert "not an image" in result.stderr


def test_evaluate_prints_the_isic_table_and_writes_json(data_root, tmp_path):
    report = tmp_path / "report.json"
    result = run(
        "evaluate",
        "--data-root",
        str(data_root),
        "--sets",
        "isic2018",
        "--limit",
        "5",
        "--samples",
        "2",
        "--output",
        str(report),
    )
    assert "thresholded_jaccard" in result.stdout
    content = json.loads(report.read_text())
    assert content["pairs"] == {"isic2018": 5}
    assert 0 <= content["metrics"]["isic2018"]["jaccard"] <= 1
    assert len(content["per_image"]["isic2018"]) == 5


def test_unknown_model_name_is_a_clear_error(tmp_path):
    result = run("train", "--model", "resnet_9000", "--output-directory", str(tmp_path), check=False)
    assert result.returncode != 0
    assert "unknown model 'resnet_9000'" in result.stderr


def copy_of_the_embedded_model(tmp_path):
    from lesionseg.config import DEFAULT_WEIGHTS
    from lesionseg.model.sidecar import sidecar_path

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(DEFAULT_WEIGHTS.read_bytes())
    sidecar_path(weights).write_text(sidecar_path(DEFAULT_WEIGHTS).read_text())
    # The out-of-distribution gate's statistics travel with the checkpoint, under the name its sidecar gives.
    statistics = DEFAULT_WEIGHTS.with_suffix(".ood.npz")
    (tmp_path / statistics.name).write_bytes(statistics.read_bytes())
    return weights


def test_calibrate_then_evaluate_uncertainty_with_plots(data_root, tmp_path):
    weights = copy_of_the_embedded_model(tmp_path)
    common = ["--weights", str(weights), "--data-root", str(data_root), "--sets", "isic2018", "--samples", "4"]
    run("calibrate", *common, "--limit", "8")
    calibration = json.loads(weights.with_suffix(".json").read_text())["calibration"]
    assert 0.5 <= calibration["temperature"] <= 4.0
    assert calibration["fitted_on"]["pairs"] == 8
    report = tmp_path / "uncertainty.json"
    partial = ["evaluate", *common, "--split", "test", "--limit", "12", "--uncertainty", "--output", str(report)]
    sidecar_before = weights.with_suffix(".json").read_text()
    refused = run(*partial, "--record", check=False)
    assert refused.returncode == 2 and "refuses a partial run (--limit)" in refused.stderr
    assert weights.with_suffix(".json").read_text() == sidecar_before
    result = run(*partial, "--plots", str(tmp_path / "plots"))
    assert "AUROC std" in result.stdout
    content = json.loads(report.read_text())
    pixel = content["uncertainty"]["isic2018"]["pixel"]
    assert 0 <= pixel["ece"] <= 1 and 0 <= pixel["std_error_detection"]["auroc"] <= 1
    assert content["temperature"] == calibration["temperature"]
    for plot in ("reliability.png", "risk_coverage.png"):
        assert (tmp_path / "plots" / plot).stat().st_size > 5_000
    card = run("info", "--weights", str(weights), "--markdown").stdout
    assert "## Calibration" in card and "## Uncertainty quality" in card


def test_model_card_file_is_generated_from_the_embedded_sidecar():
    from pathlib import Path

    from lesionseg.config import DEFAULT_WEIGHTS
    from lesionseg.model.sidecar import read_sidecar
    from lesionseg.model_card import render_model_card

    committed = (Path(__file__).resolve().parents[1] / "MODEL_CARD.md").read_text()
    assert committed == render_model_card(read_sidecar(DEFAULT_WEIGHTS)), (
        "run: lesionseg info --markdown > MODEL_CARD.md"
    )


def test_predict_a_folder_in_isic_submission_format(isic_validation_pairs, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    records = isic_validation_pairs[:3]
    for record in records:
        (folder / record.image_path.name).write_bytes(record.image_path.read_bytes())
    (folder / "notes.txt").write_text("not an image, and not picked up")
    run("predict", str(folder), "--out", str(tmp_path / "out"), "--format", "isic", "--samples", "2")
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == sorted(f"{r.identifier}_segmentation.png" for r in records)
    for record in records:
        mask = cv2.imread(str(tmp_path / "out" / f"{record.identifier}_segmentation.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == cv2.imread(str(record.mask_path), cv2.IMREAD_GRAYSCALE).shape
        assert set(mask.flatten().tolist()) <= {0, 255}


def test_a_model_split_with_another_near_duplicate_list_is_refused_in_our_words(data_root, tmp_path):
    from lesionseg.model.sidecar import sidecar_path

    weights = copy_of_the_embedded_model(tmp_path)
    sidecar = json.loads(sidecar_path(weights).read_text())
    sidecar["training"]["split"] = {"held_out_fraction": 0.1, "seed": 0, "near_duplicates": "0" * 64}
    sidecar_path(weights).write_text(json.dumps(sidecar))
    refused = run("evaluate", "--weights", str(weights), "--data-root", str(data_root), "--limit", "1", check=False)
    assert refused.returncode == 2
    assert "near-duplicate list has changed since this model was trained" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_predict_reads_only_regular_files_no_larger_than_an_upload(tmp_path, real_image_path):
    """A device, a FIFO (which would wait for a writer for ever) and a file over the limit are each refused
    before they are read; the real image beside them is segmented."""
    fifo = tmp_path / "waiting.jpg"
    os.mkfifo(fifo)
    large = tmp_path / "large.jpg"
    with open(large, "wb") as stream:
        stream.truncate(40 * 1024 * 1024)  # sparse: no disk, but 40 MB to anyone who reads it
    inputs = ["/dev/zero", str(fifo), str(large), str(real_image_path)]
    result = subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", "predict", *inputs, "--out", str(tmp_path / "out"), "--samples", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1
    assert "/dev/zero is not a regular file" in result.stderr and f"{fifo} is not a regular file" in result.stderr
    assert f"{large} is 41943040 bytes; the limit is" in result.stderr
    assert (tmp_path / "out" / f"{real_image_path.stem}_mask.png").is_file()


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_a_missing_optional_extra_is_named_in_our_words(real_image_path, tmp_path, command):
    """OpenVINO absent, as in an install without the extra: the module cannot be imported. `serve` says so
    before it starts any worker."""
    program = "import sys; sys.modules['openvino'] = None; from lesionseg.cli import main; main()"
    arguments = [str(real_image_path), "--out", str(tmp_path)] if command == "predict" else ["--port", "1"]
    result = subprocess.run(
        [sys.executable, "-c", program, command, *arguments, "--backend", "openvino"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "pip install 'lesionseg[openvino]'" in result.stderr and "Traceback" not in result.stderr


def test_the_help_imports_nothing_heavy():
    """Counted, not timed: the modules that made `lesionseg --help` take a second are never imported for it."""
    probe = (
        "import sys; from lesionseg.cli import build_parser; build_parser().format_help(); "
        "print(' '.join(sorted({'numpy', 'cv2', 'PIL', 'pydantic', 'pydantic_settings', 'torch'} & set(sys.modules))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def serve_failing(tmp_path, workers: int, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", "serve", "--port", str(free_port()), "--workers", str(workers)],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        cwd=tmp_path,
        timeout=300,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_with_a_database_it_cannot_reach_fails_in_one_line(tmp_path, workers):
    """It exited 0 after 10 s with two workers, so Restart=on-failure and CI read it as success."""
    refused = serve_failing(
        tmp_path, workers, LESIONSEG_DATABASE_URL="postgresql+psycopg://reader:secret@127.0.0.1:1/cases"
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "LESIONSEG_DATABASE_URL" in refused.stderr and "secret" not in refused.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_whose_workers_fail_to_start_exits_with_a_failure(tmp_path, workers):
    """A checkpoint whose bytes are not the ones its sidecar names loads in no worker: uvicorn's start-up
    failure code, 3, with one worker or several."""
    weights = tmp_path / "weights.safetensors"
    data = bytearray(lesionseg.config.DEFAULT_WEIGHTS.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (tmp_path / "weights.json").write_bytes(lesionseg.config.DEFAULT_WEIGHTS.with_suffix(".json").read_bytes())
    failed = serve_failing(tmp_path, workers, LESIONSEG_WEIGHTS=str(weights), LESIONSEG_BACKEND="pytorch")
    assert failed.returncode == 3, failed.stderr[-2000:]


def test_a_missing_extra_in_the_checkout_says_make_install(tmp_path):
    """`make serve`'s lean environment has no PyTorch; in the checkout the fix is `make install`, not a pip extra.
    The lean install is imitated by making `import torch` fail, as it does there."""
    script = "import sys; sys.modules['torch'] = None; from lesionseg.cli import main; main(['train', '--epochs', '1'])"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert completed.returncode == 2
    assert (
        completed.stderr.strip()
        .splitlines()[-1]
        .endswith("make install (the full environment, .venv) in this checkout")
    )


def test_predict_reads_dicom_files_in_a_folder_and_writes_dicom_answers_for_them_only(real_image_path, tmp_path):
    """A PACS export's file has no suffix (IM000001): it is found by its first bytes. `--format dicom` answers
    it with a Segmentation and a Parametric Map; a JPEG beside it is skipped, saying why."""
    from tests.dicom.pictures import wrap_jpeg

    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "IM000001").write_bytes(wrap_jpeg(real_image_path.read_bytes()))
    (folder / "lesion.jpg").write_bytes(real_image_path.read_bytes())
    (folder / "notes").write_text("not a picture")
    completed = run(
        "predict", str(folder), "--out", str(tmp_path / "out"), "--samples", "4", "--format", "dicom", check=False
    )
    assert completed.returncode == 1, completed.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "IM000001_segmentation.dcm",
        "IM000001_uncertainty.dcm",
    ]
    assert "lesion.jpg: skipped" in completed.stderr and "DICOM upload" in completed.stderr
    assert "notes" not in completed.stderr + completed.stdout

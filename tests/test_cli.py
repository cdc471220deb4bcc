"""The `lesionseg` command as a user runs it, in a subprocess, on real images."""

import json
import subprocess
import sys

import cv2
from PIL import Image


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

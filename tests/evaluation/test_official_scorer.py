"""`lesionseg evaluate` against the ISIC challenge's own scorer (`isic-challenge-scoring`, from PyPI): the
same predictions, written by `lesionseg predict --format isic`, must score the same."""

import json
import subprocess
import sys

import pytest

# Slow tier (`make test-fast` leaves it out): each test runs the lesionseg command in its own process on real images.
pytestmark = pytest.mark.slow

LESIONSEG = [sys.executable, "-m", "lesionseg.cli"]
PAIRS = 12


def test_evaluate_agrees_with_the_official_isic_scorer(data_root, isic_validation_pairs, tmp_path):
    scoring = pytest.importorskip(
        "isic_challenge_scoring.segmentation", reason="isic-challenge-scoring is not installed: make test installs it"
    )
    images, truth, predictions = (tmp_path / name for name in ("images", "truth", "predictions"))
    images.mkdir()
    truth.mkdir()
    for record in isic_validation_pairs[:PAIRS]:
        (images / record.image_path.name).symlink_to(record.image_path.resolve())
        (truth / record.mask_path.name).symlink_to(record.mask_path.resolve())
    common = ["--samples", "10", "--seed", "0"]
    predicted = subprocess.run(
        [*LESIONSEG, "predict", str(images), "--out", str(predictions), "--format", "isic", *common],
        capture_output=True,
        text=True,
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    report = tmp_path / "report.json"
    evaluated = subprocess.run(
        [*LESIONSEG, "evaluate", "--data-root", str(data_root), "--sets", "isic2018", "--split", "held-out",
         "--limit", str(PAIRS), "--output", str(report), *common],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    ours = json.loads(report.read_text())["metrics"]["isic2018"]
    official = scoring.SegmentationScore.from_dir(truth, predictions).macro_average
    names = {"jaccard": "jaccard", "threshold_jaccard": "thresholded_jaccard", "dice": "dice"}
    names |= {"accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity"}
    for theirs, mine in names.items():
        assert ours[mine] == pytest.approx(official[theirs], abs=1e-9), theirs

"""`tools/compare_evaluations.py` on two real evaluations of the shipped model (two seeds of MC dropout)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Slow tier (`make test-fast` leaves it out): each test runs the lesionseg command in its own process on real images.
pytestmark = pytest.mark.slow

TOOL = Path(__file__).parents[2] / "tools" / "compare_evaluations.py"


def evaluate(data_root: Path, output: Path, seed: int) -> dict:
    subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", "evaluate", "--data-root", str(data_root), "--sets", "isic2018"]
        + ["--limit", "6", "--samples", "2", "--seed", str(seed), "--output", str(output)],
        capture_output=True,
        check=True,
    )
    return json.loads(output.read_text())


def test_the_table_pairs_the_images_and_matches_each_evaluation(data_root, tmp_path):
    first = evaluate(data_root, tmp_path / "first.json", seed=0)
    second = evaluate(data_root, tmp_path / "second.json", seed=1)
    result = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path / "first.json"), str(tmp_path / "second.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {line.split(" | ")[2]: line.strip("| ").split(" | ") for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"jaccard", "thresholded_jaccard", "dice", "sensitivity", "specificity", "failures"}
    images = len(first["per_image"]["isic2018"])
    for metric in ("jaccard", "dice"):
        _, count, _, first_mean, second_mean, difference = rows[metric]
        assert int(count) == images == len(second["per_image"]["isic2018"])
        # Every image was scored by both, so the paired means are each evaluation's own means.
        assert float(first_mean) == round(first["metrics"]["isic2018"][metric], 4)
        assert float(second_mean) == round(second["metrics"]["isic2018"][metric], 4)
        first_scores = np.array([row[metric] for row in first["per_image"]["isic2018"]])
        second_scores = np.array([row[metric] for row in second["per_image"]["isic2018"]])
        assert float(difference.split(" ± ")[0]) == round((second_scores - first_scores).mean(), 4)
    failures = sum(row["jaccard"] < 0.65 for row in first["per_image"]["isic2018"])
    assert int(rows["failures"][3]) == failures

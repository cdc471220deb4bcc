"""`tools/compare_evaluations.py`'s partner for ensembles, on the shipped model and real pairs: an ensemble of a model
with itself scores exactly as `lesionseg evaluate` scores the model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lesionseg.config import DEFAULT_WEIGHTS

# Slow tier (`make test-fast` leaves it out): the tool and the lesionseg command each run in their own process.
pytestmark = pytest.mark.slow

TOOL = Path(__file__).parents[2] / "tools" / "evaluate_ensemble.py"
PAIRS = ["--sets", "isic2018", "--split", "test", "--limit", "3", "--samples", "2", "--seed", "1"]


def test_a_model_with_itself_scores_as_the_model_alone(data_root, tmp_path):
    alone, ensemble = tmp_path / "alone.json", tmp_path / "ensemble.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lesionseg.cli",
            "evaluate",
            "--data-root",
            str(data_root),
            *PAIRS,
            "--output",
            str(alone),
        ],
        capture_output=True,
        check=True,
    )
    subprocess.run(
        [sys.executable, str(TOOL), str(DEFAULT_WEIGHTS), str(DEFAULT_WEIGHTS), "--data-root", str(data_root), *PAIRS]
        + ["--output", str(ensemble)],
        capture_output=True,
        check=True,
    )
    # The mean of two equal probability maps is each of them, exactly: the same masks, the same rows.
    rows = {
        name: json.loads(path.read_text())["per_image"]["isic2018"]
        for name, path in [("alone", alone), ("ensemble", ensemble)]
    }
    assert len(rows["ensemble"]) == 3
    for single, pair in zip(rows["alone"], rows["ensemble"], strict=True):
        assert pair["id"] == single["id"]
        assert pair["jaccard"] == single["jaccard"] and pair["dice"] == single["dice"]


def test_one_checkpoint_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, str(TOOL), str(DEFAULT_WEIGHTS), "--output", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "an ensemble takes two or more checkpoints" in result.stderr

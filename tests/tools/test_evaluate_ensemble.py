"""`tools/compare_evaluations.py`'s partner for ensembles, on the shipped model and real pairs: an ensemble of a model
with itself scores exactly as `lesionseg evaluate` scores the model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.near_duplicates import NEAR_DUPLICATES
from lesionseg.model.checkpoint import load_checkpoint, save_checkpoint
from lesionseg.model.sidecar import config_from_sidecar, file_sha256

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


def test_members_of_other_splits_are_scored_only_on_pairs_none_trained_on(data_root, tmp_path):
    """The shipped model's split predates grouping near-duplicates; a model trained since groups them, which moves
    two ISIC photos whose near-duplicates the shipped model trained on: they are left out, and said so."""
    model, sidecar = load_checkpoint(DEFAULT_WEIGHTS)
    grouped = {**sidecar.training, "split": {"held_out_fraction": 0.1, "seed": 0}}
    grouped["split"]["near_duplicates"] = file_sha256(NEAR_DUPLICATES)
    member = tmp_path / "grouped.safetensors"
    save_checkpoint(model, config_from_sidecar(sidecar), member, {"training": grouped})
    result = subprocess.run(
        [sys.executable, str(TOOL), str(DEFAULT_WEIGHTS), str(member), "--data-root", str(data_root), *PAIRS]
        + ["--output", str(tmp_path / "ensemble.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "isic2018: 2 test pairs left out, not in every member's test split" in result.stdout


def test_one_checkpoint_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, str(TOOL), str(DEFAULT_WEIGHTS), "--output", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "an ensemble takes two or more checkpoints" in result.stderr

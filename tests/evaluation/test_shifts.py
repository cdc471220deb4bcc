"""The shift test bed on the real model and real pairs: a row per set and shift, the per-image rows that
tools/compare_evaluations.py pairs, and the gate's rate on unlabeled dermoscopy."""

import json
import subprocess
import sys

import pytest

from lesionseg.data.splits import Split
from lesionseg.evaluation.shifts import evaluate_shift, format_gate_table, format_shift_table, gate_shift_bed
from lesionseg.imaging.shifts import SHIFTS_BY_NAME

# Slow tier (`make test-fast` leaves it out): each test runs the lesionseg command in its own process on real images.
pytestmark = pytest.mark.slow


def test_a_shift_is_scored_against_the_truth_shifted_with_it(predictor, isic_validation_pairs):
    records = isic_validation_pairs[:3]
    plain, plain_rows = evaluate_shift(predictor, records, SHIFTS_BY_NAME["none"], samples=2, seed=0)
    zoomed, _ = evaluate_shift(predictor, records, SHIFTS_BY_NAME["zoom 1.6×"], samples=2, seed=0)
    assert plain["images"] == zoomed["images"] == 3 and [row["id"] for row in plain_rows] == [
        record.identifier for record in records
    ]
    # Were the truth left unzoomed, the zoomed masks would score far below the plain ones.
    assert zoomed["jaccard"] > plain["jaccard"] - 0.15
    assert 0 <= zoomed["flagged"] <= 1 and 0 < zoomed["pixel_error_auroc"] <= 1


def test_evaluate_shifts_prints_the_table_and_writes_comparable_rows(data_root, tmp_path):
    output = tmp_path / "shifts.json"
    completed = subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", "evaluate", "--shifts", "--limit", "2", "--samples", "2",
         "--sets", "ham10000", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=1800,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| ham10000 | vignette | 2 |" in completed.stdout
    assert "| unlabeled isic2017-256px (odd) | none | 140 |" in completed.stdout
    report = json.loads(output.read_text())
    assert len(report["per_image"]) == len(SHIFTS_BY_NAME)
    assert format_shift_table(report) in completed.stdout
    compared = subprocess.run(
        [sys.executable, "tools/compare_evaluations.py", str(output), str(output)], capture_output=True, text=True
    )
    assert compared.returncode == 0 and "| ham10000 | zoom 2.2× | 2 | jaccard |" in compared.stdout


def test_the_gate_alone_flags_what_the_full_path_flags_under_each_shift(predictor, isic_validation_pairs, data_root):
    records = isic_validation_pairs[:4]
    report = gate_shift_bed(predictor, {"isic2018": records}, data_root, Split.of_model(predictor.sidecar.training))
    assert set(report["shifts"]["isic2018"]) == set(SHIFTS_BY_NAME)
    for name in ("none", "zoom 2.2×", "over-exposed 1.3"):
        summary, _ = evaluate_shift(predictor, records, SHIFTS_BY_NAME[name], samples=2, seed=0)
        assert report["shifts"]["isic2018"][name] == {"images": 4, "flagged": summary["flagged"]}, name
    table = format_gate_table(report)
    assert "| isic2018 | vignette | 4 |" in table and "| unlabeled isic2017-256px (odd) | none | 140 |" in table
    assert "\nworst: " in table

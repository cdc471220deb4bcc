"""The shift test bed: what another clinic's camera would do to accuracy, uncertainty and the gate, measured on
the test split under each camera-like shift of `imaging/shifts.py`, and the gate alone on unlabeled dermoscopy
that nothing was fitted on. `lesionseg evaluate --shifts` prints its table and writes its per-image rows in the
layout `tools/compare_evaluations.py` reads (one "set" per set and shift)."""

from pathlib import Path

import numpy as np
from tqdm import tqdm

from lesionseg.data.pairs import PairRecord
from lesionseg.defaults import DEFAULT_TTA
from lesionseg.evaluation.evaluate import evaluate_pairs
from lesionseg.evaluation.metrics import FAILURE_JACCARD
from lesionseg.evaluation.out_of_distribution import held_out_dermoscopy, image_scores, shift_groups
from lesionseg.evaluation.uncertainty_metrics import PixelAccumulator, failures_removed_by_referring
from lesionseg.imaging.shifts import SHIFTS, Shift
from lesionseg.predictor import Predictor


def evaluate_shift(
    predictor: Predictor, records: list[PairRecord], shift: Shift, samples: int, seed: int, tta: bool = DEFAULT_TTA
) -> tuple[dict, list[dict]]:
    """One set under one shift: (its summary row, one row per image)."""
    accumulator = PixelAccumulator(uncertainty_max=0.5)
    means, rows = evaluate_pairs(
        predictor, records, samples, seed, pixel_accumulators={"std": accumulator}, shift=shift, tta=tta
    )
    jaccards = np.array([row["jaccard"] for row in rows])
    summary = {
        "images": len(rows),
        **{name: means[name] for name in ("jaccard", "thresholded_jaccard", "sensitivity", "specificity")},
        "failures": int((jaccards < FAILURE_JACCARD).sum()),
        "flagged": float(np.mean([bool(row["out_of_distribution"]) for row in rows])),
        "ece": accumulator.expected_calibration_error(),
        "pixel_error_auroc": accumulator.error_detection()["auroc"],
        "failures_removed_referring_10_percent": failures_removed_by_referring(
            np.array([row["uncertainty_score"] for row in rows]), jaccards, 0.10
        ),
    }
    return summary, rows


def unlabeled_flag_rates(predictor: Predictor, data_root: Path, split) -> dict[str, dict]:
    """The gate alone on the unlabeled ISIC 2017 and full-size photos that chose nothing (the odd-numbered
    halves: the even ones set the gate's thresholds)."""
    rates = {}
    for name, paths in held_out_dermoscopy(data_root, [], "report", split).items():
        if "128px" in name:
            continue  # ISIC 2018 test images: the gate's fitting uses the rest of that folder
        flagged = predictor.gate.scores(image_scores(predictor, paths, name, samples=0)["features"]) >= 1.0
        rates[name] = {"images": len(flagged), "flagged": float(flagged.mean())}
    return rates


def evaluate_shift_bed(
    predictor: Predictor,
    records_by_set: dict[str, list[PairRecord]],
    data_root: Path,
    split,
    samples: int,
    seed: int,
    shifts: tuple[Shift, ...] = SHIFTS,
    tta: bool = DEFAULT_TTA,
) -> dict:
    """{"shifts": {set: {shift: summary}}, "unlabeled": flag rates, "per_image": {"set | shift": rows}}."""
    table: dict[str, dict[str, dict]] = {}
    per_image: dict[str, list[dict]] = {}
    for set_name, records in records_by_set.items():
        for shift in tqdm(shifts, desc=f"shifts of {set_name}", unit="shift"):
            summary, rows = evaluate_shift(predictor, records, shift, samples, seed, tta)
            table.setdefault(set_name, {})[shift.name] = summary
            per_image[f"{set_name} | {shift.name}"] = rows
    unlabeled = unlabeled_flag_rates(predictor, data_root, split) if predictor.gate is not None else {}
    return {"shifts": table, "unlabeled": unlabeled, "per_image": per_image}


def gate_shift_bed(predictor: Predictor, records_by_set: dict[str, list[PairRecord]], data_root: Path, split) -> dict:
    """The gate alone on every pair of each set under each shift (only the trunk runs, so the whole split is
    affordable, where a 3 % bound on 60 pairs could not be told from 5 %): {"shifts": {set: {shift: {"images",
    "flagged"}}}, "unlabeled": ...}."""
    if predictor.gate is None:
        raise ValueError("this model has no out-of-distribution gate: run `lesionseg calibrate-ood` first")
    table = {}
    for set_name, records in records_by_set.items():
        groups = shift_groups(predictor, records, include_none=True)
        table[set_name] = {
            shift: {"images": len(features), "flagged": float((predictor.gate.scores(features) >= 1.0).mean())}
            for shift, features in groups.items()
        }
    return {"shifts": table, "unlabeled": unlabeled_flag_rates(predictor, data_root, split)}


def format_gate_table(report: dict) -> str:
    """One line per set and shift: how much of the genuine dermoscopy the gate flagged; the worst last."""
    lines = ["| set | shift | images | flagged |", "|---|---|---:|---:|"]
    rows = [(name, shift, row) for name, by_shift in report["shifts"].items() for shift, row in by_shift.items()]
    rows += [(name, "none", row) for name, row in report["unlabeled"].items()]
    for set_name, shift, row in rows:
        lines.append(f"| {set_name} | {shift} | {row['images']} | {row['flagged']:.1%} |")
    set_name, shift, row = max(rows, key=lambda found: found[2]["flagged"])
    lines.append(f"\nworst: {set_name} under {shift}, {row['flagged']:.1%} of {row['images']}")
    return "\n".join(lines)


def percent(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.0%}"  # no failures to catch


def format_shift_table(report: dict) -> str:
    """The documentation's table (docs/another-clinic.md): one line per set and shift, then the unlabeled sets'
    flag rates."""
    lines = [
        "| set | shift | images | Jaccard | thresholded Jaccard | failures | flagged | ECE | pixel-error AUROC "
        "| failures caught referring 10 % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for set_name, by_shift in report["shifts"].items():
        for shift_name, row in by_shift.items():
            lines.append(
                f"| {set_name} | {shift_name} | {row['images']} | {row['jaccard']:.4f} | "
                f"{row['thresholded_jaccard']:.4f} | {row['failures']} | {row['flagged']:.1%} | {row['ece']:.4f} | "
                f"{row['pixel_error_auroc']:.3f} | {percent(row['failures_removed_referring_10_percent'])} |"
            )
    for name, row in report["unlabeled"].items():
        lines.append(f"| {name} | none | {row['images']} | | | | {row['flagged']:.1%} | | | |")
    return "\n".join(lines)

"""Calibrates the coverage thresholds and checks them: per image, the missed-fraction and precision
curves at the image's own size; over repeated random calibration/test splits, the realised miss rate.
"""

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from lesionseg.data.pairs import PairRecord, discover_pairs, read_image, read_truth
from lesionseg.data.splits import Split
from lesionseg.defaults import DEFAULT_TTA
from lesionseg.predictor import Predictor
from lesionseg.uncertainty.coverage import (
    THRESHOLD_GRID,
    conformal_threshold,
    mask_precision_curve,
    missed_fraction_curve,
)
from lesionseg.uncertainty.sampling import summarise

REPORTED_COVERAGES = (0.8, 0.9, 0.95)


def pair_curves(
    predictor: Predictor,
    records: list[PairRecord],
    samples: int,
    seed: int,
    description: str,
    tta: bool = DEFAULT_TTA,
) -> tuple[np.ndarray, np.ndarray]:
    """(missed, precision), each pairs×grid, from the served probability: the MC mean at the calibrated
    temperature, resized to the image's own size as a response is."""
    missed, precision = [], []
    for record in tqdm(records, desc=description, unit="image"):
        rgb = read_image(record.image_path)
        logits = predictor.sample(predictor.model_input(rgb), samples, seed, tta)[0]
        model_probability = summarise(logits, predictor.temperature).mean_probability[0]
        truth = read_truth(record.mask_path)
        probability = cv2.resize(model_probability, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
        missed.append(missed_fraction_curve(probability, truth))
        precision.append(mask_precision_curve(probability, truth))
    return np.array(missed), np.array(precision)


def shipped_thresholds_report(
    missed: np.ndarray, precision: np.ndarray, thresholds: dict[str, float]
) -> dict[str, dict[str, float]]:
    """The checkpoint's own thresholds on pairs they were not calibrated on."""
    report = {}
    for coverage in REPORTED_COVERAGES:
        threshold = thresholds[f"{coverage:.2f}"]
        column = int(np.searchsorted(THRESHOLD_GRID, threshold))
        report[f"{coverage:.2f}"] = {
            "threshold": threshold,
            "missed_fraction": float(missed[:, column].mean()),
            "precision": float(np.nanmean(precision[:, column])),
        }
    return report


def repeated_splits(
    missed: np.ndarray, precision: np.ndarray, repeats: int = 200, calibration_fraction: float = 0.5, seed: int = 0
) -> dict[str, dict]:
    """For each reported coverage: calibrate on a random part, measure on the rest, `repeats` times."""
    generator = np.random.default_rng(seed)
    count = len(missed)
    calibration_count = int(round(count * calibration_fraction))
    realised: dict[float, list[tuple[float, float, float]]] = {coverage: [] for coverage in REPORTED_COVERAGES}
    for _ in range(repeats):
        order = generator.permutation(count)
        calibration, test = order[:calibration_count], order[calibration_count:]
        for coverage in REPORTED_COVERAGES:
            threshold = conformal_threshold(missed[calibration], coverage)
            column = int(np.searchsorted(THRESHOLD_GRID, threshold))
            realised[coverage].append(
                (threshold, float(missed[test, column].mean()), float(np.nanmean(precision[test, column])))
            )
    report = {}
    for coverage, rows in realised.items():
        thresholds, missed_rates, precisions = (np.array(values) for values in zip(*rows, strict=True))
        report[f"{coverage:.2f}"] = {
            "allowed_missed_fraction": round(1 - coverage, 4),
            "threshold_mean": float(thresholds.mean()),
            "missed_fraction_mean": float(missed_rates.mean()),
            "missed_fraction_5_95": [float(np.quantile(missed_rates, 0.05)), float(np.quantile(missed_rates, 0.95))],
            "splits_within_bound": float((missed_rates <= 1 - coverage).mean()),
            "precision_mean": float(precisions.mean()),
        }
    return {"pairs": count, "repeats": repeats, "calibration_fraction": calibration_fraction, "coverages": report}


def evaluate_coverage_sets(
    predictor: Predictor,
    split: Split,
    data_root: Path,
    sets: list[str],
    samples: int,
    seed: int,
    limit: int | None = None,
    tta: bool = DEFAULT_TTA,
) -> dict[str, dict]:
    """Realised miss rate and precision of coverage masks over repeated random calibration/test splits
    of each set's held-out pairs (validation and test), and of the shipped thresholds on the test split."""
    reports = {}
    for set_name in sets:
        every_pair = discover_pairs(data_root / set_name)
        records = split.select(every_pair, "held-out")[:limit]
        missed, precision = pair_curves(predictor, records, samples, seed, set_name, tta)
        reports[set_name] = repeated_splits(missed, precision)
        if predictor.coverage_thresholds:
            # From the whole set, not `records`: a test photo is left out when its near-duplicate was trained
            # on, and the training pairs are not among the held-out ones.
            testing = {record.identifier for record in split.select(every_pair, "test")}
            rows = np.array([record.identifier in testing for record in records])
            reports[set_name]["shipped_on_test_split"] = {
                "pairs": int(rows.sum()),
                **shipped_thresholds_report(missed[rows], precision[rows], predictor.coverage_thresholds),
            }
    return reports


def format_coverage_tables(reports: dict[str, dict]) -> str:
    lines = [
        "| set | coverage | allowed miss | realised miss (mean) | 5–95 % of splits | within bound | precision |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for set_name, report in reports.items():
        for coverage, row in report["coverages"].items():
            low, high = row["missed_fraction_5_95"]
            lines.append(
                f"| {set_name} | {coverage} | {row['allowed_missed_fraction']:.3f} | {row['missed_fraction_mean']:.4f} "
                f"| {low:.4f}–{high:.4f} | {row['splits_within_bound']:.0%} | {row['precision_mean']:.4f} |"
            )
    lines += [
        "",
        "The shipped thresholds on the test split (never calibrated on):",
        "| set | pairs | coverage | threshold | realised miss | precision |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for set_name, report in reports.items():
        shipped = dict(report.get("shipped_on_test_split", {}))
        pairs = shipped.pop("pairs", 0)
        for coverage, row in shipped.items():
            lines.append(
                f"| {set_name} | {pairs} | {coverage} | {row['threshold']} | {row['missed_fraction']:.4f} "
                f"| {row['precision']:.4f} |"
            )
    return "\n".join(lines)

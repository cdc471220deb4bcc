"""Scores a checkpoint on ISIC-layout pairs at each image's own size, as the served masks are made."""

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lesionseg.data.pairs import PairRecord, read_image, read_truth
from lesionseg.defaults import DEFAULT_THRESHOLD, DEFAULT_TTA
from lesionseg.evaluation.metrics import FAILURE_JACCARD, METRIC_NAMES, mean_scores, score_masks
from lesionseg.evaluation.uncertainty_metrics import (
    PixelAccumulator,
    failures_removed_by_referring,
    risk_coverage,
    spearman,
)
from lesionseg.imaging.shifts import Shift
from lesionseg.predictor import Predictor


def evaluate_pairs(
    predictor: Predictor,
    records: list[PairRecord],
    samples: int,
    seed: int,
    threshold: float = DEFAULT_THRESHOLD,
    pixel_accumulators: dict[str, PixelAccumulator] | None = None,
    tta: bool = DEFAULT_TTA,
    shift: Shift | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Mean metrics and one row per image. The mask is the MC mean ≥ threshold, as served.

    With `pixel_accumulators` ("std" and/or "entropy"), every pixel also feeds the uncertainty metrics. With
    `shift`, each photo and its truth are shifted together first (the shift test bed).
    """
    rows, scores = [], []
    description = f"evaluating {records[0].source if records else ''}" + (f", {shift.name}" if shift else "")
    for record in tqdm(records, desc=description, unit="image", leave=shift is None):
        rgb, truth = read_image(record.image_path), read_truth(record.mask_path)
        if shift is not None:
            rgb, truth = shift.apply(rgb, truth)
        prediction = predictor.predict(rgb, samples=samples, seed=seed, threshold=threshold, tta=tta)
        score = score_masks(prediction.mask, truth)
        scores.append(score)
        signals = {"std": prediction.uncertainty_std, "entropy": prediction.predictive_entropy}
        for name, accumulator in (pixel_accumulators or {}).items():
            accumulator.add(prediction.mean_probability, signals[name], truth, threshold)
        rows.append(
            {
                "id": record.identifier,
                **score.to_dict(),
                "uncertainty_score": prediction.uncertainty_score,
                "out_of_distribution": prediction.out_of_distribution,
            }
        )
    return mean_scores(scores), rows


def evaluate_sets(
    predictor: Predictor,
    records_by_set: dict[str, list[PairRecord]],
    samples: int,
    seed: int,
    tta: bool = DEFAULT_TTA,
    with_uncertainty: bool = False,
) -> tuple[dict, dict, dict, dict]:
    """Each set's mean metrics, pair count, per-image rows and (`with_uncertainty`) uncertainty report."""
    results, counts, per_image, uncertainty = {}, {}, {}, {}
    for set_name, records in records_by_set.items():
        accumulators = (
            {"std": PixelAccumulator(uncertainty_max=0.5), "entropy": PixelAccumulator(uncertainty_max=1.0)}
            if with_uncertainty
            else None
        )
        results[set_name], per_image[set_name] = evaluate_pairs(
            predictor, records, samples, seed, pixel_accumulators=accumulators, tta=tta
        )
        counts[set_name] = len(records)
        if accumulators:
            uncertainty[set_name] = uncertainty_report(accumulators, per_image[set_name], predictor.review_threshold)
    return results, counts, per_image, uncertainty


def uncertainty_report(accumulators: dict[str, PixelAccumulator], rows: list[dict], review_threshold: float) -> dict:
    scores = np.array([row["uncertainty_score"] for row in rows])
    jaccards = np.array([row["jaccard"] for row in rows])
    dices = np.array([row["dice"] for row in rows])
    first = next(iter(accumulators.values()))
    flagged = scores >= review_threshold
    failures = jaccards < FAILURE_JACCARD
    return {
        "pixel": {
            "ece": first.expected_calibration_error(),
            "brier": first.brier_score(),
            **{f"{name}_error_detection": accumulator.error_detection() for name, accumulator in accumulators.items()},
        },
        "image": {
            "images": len(rows),
            "spearman_score_vs_dice": spearman(scores, dices),
            "failures": int(failures.sum()),
            "failures_removed_referring_10_percent": failures_removed_by_referring(scores, jaccards, 0.10),
            "review_threshold": review_threshold,
            "review_flagged_fraction": float(flagged.mean()),
            "review_failures_caught": float(failures[flagged].sum() / max(1, failures.sum())),
            "mean_thresholded_jaccard_all": float(np.where(failures, 0, jaccards).mean()),
            "mean_thresholded_jaccard_unflagged": float(np.where(failures, 0, jaccards)[~flagged].mean())
            if (~flagged).any()
            else float("nan"),
        },
        "reliability": first.reliability(),
        "risk_coverage": risk_coverage(scores, jaccards),
    }


def format_table(results: dict[str, dict[str, float]], pair_counts: dict[str, int]) -> str:
    header = f"{'set':<12} {'pairs':>6} " + " ".join(f"{name:>20}" for name in METRIC_NAMES)
    lines = [header, "-" * len(header)]
    for set_name, means in results.items():
        values = " ".join(f"{means[name]:>20.4f}" for name in METRIC_NAMES)
        lines.append(f"{set_name:<12} {pair_counts[set_name]:>6} {values}")
    return "\n".join(lines)


def format_uncertainty_table(reports: dict[str, dict]) -> str:
    columns = [
        ("ECE", lambda r: r["pixel"]["ece"]),
        ("Brier", lambda r: r["pixel"]["brier"]),
        ("AUROC std", lambda r: r["pixel"]["std_error_detection"]["auroc"]),
        ("AUPRC std", lambda r: r["pixel"]["std_error_detection"]["auprc"]),
        ("UEO std", lambda r: r["pixel"]["std_error_detection"]["ueo"]),
        ("AUROC entropy", lambda r: r["pixel"]["entropy_error_detection"]["auroc"]),
        ("Spearman", lambda r: r["image"]["spearman_score_vs_dice"]),
        ("fail@10%", lambda r: r["image"]["failures_removed_referring_10_percent"]),
    ]
    header = f"{'set':<12} {'images':>6} " + " ".join(f"{name:>13}" for name, _ in columns)
    lines = [header, "-" * len(header)]
    for set_name, report in reports.items():
        values = " ".join(f"{getter(report):>13.4f}" for _, getter in columns)
        lines.append(f"{set_name:<12} {report['image']['images']:>6} {values}")
    return "\n".join(lines)


def write_report(path: Path, report: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")

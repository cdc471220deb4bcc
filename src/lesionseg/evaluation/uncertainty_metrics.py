"""Does the uncertainty mean something? Pixel calibration, error detection, image-level referral.

Pixel statistics are accumulated in fixed histograms as images stream past, so millions of
pixels cost a few kilobytes and every metric below is exact up to the bin width.
"""

from dataclasses import dataclass, field

import numpy as np

from lesionseg.evaluation.metrics import FAILURE_JACCARD

CALIBRATION_BINS = 15
UNCERTAINTY_BINS = 2000


@dataclass
class PixelAccumulator:
    """Streaming sums for ECE, Brier, and the error-detection curves of one uncertainty signal."""

    uncertainty_max: float
    confidence_count: np.ndarray = field(default_factory=lambda: np.zeros(CALIBRATION_BINS))
    confidence_probability: np.ndarray = field(default_factory=lambda: np.zeros(CALIBRATION_BINS))
    confidence_positive: np.ndarray = field(default_factory=lambda: np.zeros(CALIBRATION_BINS))
    brier_sum: float = 0.0
    pixel_count: int = 0
    error_histogram: np.ndarray = field(default_factory=lambda: np.zeros(UNCERTAINTY_BINS))
    correct_histogram: np.ndarray = field(default_factory=lambda: np.zeros(UNCERTAINTY_BINS))

    def add(self, probability: np.ndarray, uncertainty: np.ndarray, truth: np.ndarray, threshold: float) -> None:
        probability = probability.ravel()
        truth = truth.ravel()
        bins = np.minimum((probability * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
        self.confidence_count += np.bincount(bins, minlength=CALIBRATION_BINS)
        self.confidence_probability += np.bincount(bins, weights=probability, minlength=CALIBRATION_BINS)
        self.confidence_positive += np.bincount(bins, weights=truth.astype(float), minlength=CALIBRATION_BINS)
        self.brier_sum += float(np.sum((probability - truth) ** 2))
        self.pixel_count += probability.size
        error = (probability >= threshold) != truth
        levels = np.minimum(
            (uncertainty.ravel() / self.uncertainty_max * UNCERTAINTY_BINS).astype(int), UNCERTAINTY_BINS - 1
        )
        self.error_histogram += np.bincount(levels[error], minlength=UNCERTAINTY_BINS)
        self.correct_histogram += np.bincount(levels[~error], minlength=UNCERTAINTY_BINS)

    def expected_calibration_error(self) -> float:
        """Probability-binned ECE on the lesion probability (both classes, every pixel)."""
        filled = self.confidence_count > 0
        gap = np.abs(self.confidence_probability[filled] - self.confidence_positive[filled])
        return float(gap.sum() / self.pixel_count)

    def reliability(self) -> list[dict]:
        rows = []
        for index in range(CALIBRATION_BINS):
            count = self.confidence_count[index]
            if count:
                rows.append(
                    {
                        "bin_low": index / CALIBRATION_BINS,
                        "mean_probability": self.confidence_probability[index] / count,
                        "observed_frequency": self.confidence_positive[index] / count,
                        "pixels": int(count),
                    }
                )
        return rows

    def brier_score(self) -> float:
        return self.brier_sum / self.pixel_count

    def error_detection(self) -> dict[str, float]:
        """AUROC and AUPRC of uncertainty for finding mis-segmented pixels, and the best UEO."""
        # Thresholds from high to low uncertainty: flagged = pixels at or above the threshold.
        errors_flagged = np.cumsum(self.error_histogram[::-1])
        correct_flagged = np.cumsum(self.correct_histogram[::-1])
        total_errors, total_correct = errors_flagged[-1], correct_flagged[-1]
        if total_errors == 0 or total_correct == 0:
            return {"auroc": float("nan"), "auprc": float("nan"), "ueo": float("nan"), "error_rate": 0.0}
        true_positive_rate = np.concatenate([[0.0], errors_flagged / total_errors])
        false_positive_rate = np.concatenate([[0.0], correct_flagged / total_correct])
        # Pixels tied in one bin are ordered at random: the trapezoid rule scores that exactly.
        auroc = float(np.trapezoid(true_positive_rate, false_positive_rate))
        precision = errors_flagged / np.maximum(errors_flagged + correct_flagged, 1)
        recall_steps = np.diff(np.concatenate([[0.0], errors_flagged / total_errors]))
        auprc = float(np.sum(precision * recall_steps))
        overlap_dice = 2 * errors_flagged / (errors_flagged + correct_flagged + total_errors)
        return {
            "auroc": auroc,
            "auprc": auprc,
            "ueo": float(overlap_dice.max()),
            "error_rate": float(total_errors / (total_errors + total_correct)),
        }


def average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0
        start = end + 1
    return ranks


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.corrcoef(average_ranks(np.asarray(first)), average_ranks(np.asarray(second)))[0, 1])


def risk_coverage(scores: np.ndarray, jaccards: np.ndarray, steps: int = 20) -> list[dict]:
    """Refer the most uncertain images first; what is left, and how good is it?"""
    order = np.argsort(-scores, kind="mergesort")
    thresholded = np.where(jaccards >= FAILURE_JACCARD, jaccards, 0.0)
    failures = jaccards < FAILURE_JACCARD
    rows = []
    for step in range(steps):
        referred_fraction = step / steps
        referred = order[: int(round(referred_fraction * len(scores)))]
        kept = np.setdiff1d(np.arange(len(scores)), referred)
        rows.append(
            {
                "referred_fraction": referred_fraction,
                "coverage": len(kept) / len(scores),
                "mean_thresholded_jaccard": float(thresholded[kept].mean()),
                "failures_removed": float(failures[referred].sum() / max(1, failures.sum())),
            }
        )
    return rows


def failures_removed_by_referring(scores: np.ndarray, jaccards: np.ndarray, fraction: float) -> float:
    failures = jaccards < FAILURE_JACCARD
    if not failures.any():
        return float("nan")
    referred = np.argsort(-scores, kind="mergesort")[: int(round(fraction * len(scores)))]
    return float(failures[referred].sum() / failures.sum())

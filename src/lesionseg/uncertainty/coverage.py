"""Masks with a coverage guarantee, by conformal risk control (Angelopoulos et al., "Conformal Risk
Control", 2022), for the fraction of lesion pixels a mask misses.

For each calibration image, `missed_fraction_curve` gives the fraction of its lesion pixels outside the
mask {probability ≥ t}, for every candidate threshold t; it never falls as t rises. For n images and a
target coverage c (risk α = 1 − c), the threshold is the largest t with (n · mean risk(t) + 1) / (n + 1)
≤ α. If the calibration images and a new one are exchangeable, the new image's expected missed fraction
is then at most α. That is an average over images and calibration sets: it says nothing about one image,
nor about images from another clinic, device or population than the calibration set's. NumPy only.
"""

import numpy as np

# Candidate thresholds on the mean probability, 0.000 to 1.000.
THRESHOLD_GRID = np.round(np.linspace(0.0, 1.0, 1001), 3)
# Coverages a checkpoint is calibrated for; a request's coverage uses the next one up (never less).
COVERAGE_GRID = np.round(np.arange(0.50, 0.991, 0.01), 2)
MIN_COVERAGE = float(COVERAGE_GRID[0])
MAX_COVERAGE = float(COVERAGE_GRID[-1])


def missed_fraction_curve(probability: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """Fraction of lesion pixels with probability below each threshold of THRESHOLD_GRID; all zero
    for an image without lesion pixels (nothing can be missed)."""
    lesion_probabilities = np.sort(probability[lesion], axis=None)
    if lesion_probabilities.size == 0:
        return np.zeros(len(THRESHOLD_GRID))
    return np.searchsorted(lesion_probabilities, THRESHOLD_GRID, side="left") / lesion_probabilities.size


def mask_precision_curve(probability: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """True positives / mask pixels at each threshold; NaN where the mask is empty."""
    lesion_count = np.sort(probability[lesion], axis=None)
    background = np.sort(probability[~lesion], axis=None)
    true_positives = lesion_count.size - np.searchsorted(lesion_count, THRESHOLD_GRID, side="left")
    false_positives = background.size - np.searchsorted(background, THRESHOLD_GRID, side="left")
    predicted = true_positives + false_positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(predicted > 0, true_positives / predicted, np.nan)


def conformal_threshold(missed_curves: np.ndarray, coverage: float) -> float:
    """The largest threshold whose corrected mean missed fraction over `missed_curves` (n×grid) is at
    most 1 − coverage. Threshold 0 takes every pixel and misses nothing, so it is the fallback."""
    count = len(missed_curves)
    corrected_risk = (count * missed_curves.mean(axis=0) + 1.0) / (count + 1)
    admissible = np.flatnonzero(corrected_risk <= 1.0 - coverage + 1e-12)
    return float(THRESHOLD_GRID[admissible[-1]]) if admissible.size else 0.0


def calibrated_thresholds(missed_curves_by_source: list[np.ndarray]) -> dict[str, float]:
    """The threshold for each coverage of COVERAGE_GRID, keyed "0.90" and so on, for the sidecar: the
    lowest of each source's own conformal threshold. Pooling the sources would hold the bound only for
    their mixture (on ISIC alone, pooled with four times as many HAM10000 images, a 0.90 mask missed 13.8 %);
    the lowest holds it for each source calibrated on."""
    return {
        f"{coverage:.2f}": min(conformal_threshold(curves, coverage) for curves in missed_curves_by_source)
        for coverage in COVERAGE_GRID
    }


def threshold_for_coverage(thresholds: dict[str, float], coverage: float) -> tuple[float, float]:
    """(threshold, the calibrated coverage it guarantees): the grid's coverage at or above the request's."""
    if not MIN_COVERAGE <= coverage <= MAX_COVERAGE:
        raise ValueError(f"coverage must be between {MIN_COVERAGE} and {MAX_COVERAGE}, got {coverage}")
    calibrated = min(float(key) for key in thresholds if float(key) >= coverage - 1e-9)
    return thresholds[f"{calibrated:.2f}"], calibrated

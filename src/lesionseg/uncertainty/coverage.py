"""Masks with a coverage guarantee, by conformal risk control (Angelopoulos et al., "Conformal Risk
Control", 2022), for the fraction of lesion pixels a mask misses.

For each calibration image, `missed_fraction_curve` gives the fraction of its lesion pixels outside the
mask {probability ≥ t}, for every candidate threshold t; it never falls as t rises. For n images and a
target coverage c (risk α = 1 − c), the threshold is the largest t with (n · mean risk(t) + 1) / (n + 1)
≤ α. If the calibration images and a new one are exchangeable, the new image's expected missed fraction
is then at most α. That is an average over images and calibration sets: it says nothing about one image,
nor about images from another clinic, device or population than the calibration set's. NumPy only.
"""

import math

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


def hoeffding_bentkus_p_value(mean_risk: float, count: int, alpha: float) -> float:
    """A valid p-value for "the true mean of these losses in [0, 1] is above `alpha`", from their mean over
    `count` cases: the smaller of Hoeffding's and Bentkus's bounds (Bates et al., "Distribution-Free,
    Risk-Controlling Prediction Sets", 2021, Proposition 3.2)."""
    if mean_risk >= alpha:
        return 1.0
    below = max(mean_risk, 0.0)
    kl = (below * math.log(below / alpha) if below > 0 else 0.0) + (1 - below) * math.log((1 - below) / (1 - alpha))
    hoeffding = math.exp(-count * kl)
    bentkus = math.e * binomial_cdf(math.ceil(count * mean_risk - 1e-9), count, alpha)
    return min(hoeffding, bentkus, 1.0)


def binomial_cdf(successes: int, trials: int, probability: float) -> float:
    """P(Binomial(trials, probability) ≤ successes), summed in log space (no SciPy in the lean install)."""
    total = 0.0
    for k in range(0, min(successes, trials) + 1):
        log_term = (
            math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
            + k * math.log(probability) + (trials - k) * math.log1p(-probability)
        )  # fmt: skip
        total += math.exp(log_term)
    return min(total, 1.0)


def cases_to_certify(coverage: float, delta: float) -> int:
    """The fewest cases that can certify `coverage` at all: even with nothing missed, the p-value is
    (1 − α)^n, which must reach δ."""
    return math.ceil(math.log(delta) / math.log(coverage))


def certified_threshold(missed_curves: np.ndarray, coverage: float, delta: float) -> float | None:
    """The highest threshold whose mean missed fraction is certified at most 1 − coverage with probability at
    least 1 − δ over the calibration set (Learn then Test, Angelopoulos et al. 2021): thresholds are tested in
    order from 0 (which misses nothing) up, and the last certified before the first that is not is taken, so
    no correction for the number tested is needed. None where not even 0.001 is certified: too few cases, or
    a model that misses too much there."""
    count, chosen = len(missed_curves), None
    for index, risk in enumerate(missed_curves.mean(axis=0)):
        if hoeffding_bentkus_p_value(float(risk), count, 1.0 - coverage) > delta:
            break
        chosen = index
    return None if chosen is None or chosen == 0 else float(THRESHOLD_GRID[chosen])


def threshold_for_coverage(thresholds: dict[str, float], coverage: float) -> tuple[float, float]:
    """(threshold, the calibrated coverage it guarantees): the grid's coverage at or above the request's."""
    if not MIN_COVERAGE <= coverage <= MAX_COVERAGE:
        raise ValueError(f"coverage must be between {MIN_COVERAGE} and {MAX_COVERAGE}, got {coverage}")
    calibrated = min(float(key) for key in thresholds if float(key) >= coverage - 1e-9)
    return thresholds[f"{calibrated:.2f}"], calibrated

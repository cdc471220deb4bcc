"""Conformal risk control of the missed lesion fraction: the curves, the threshold, the guarantee."""

import numpy as np
import pytest

from lesionseg.uncertainty.coverage import (
    THRESHOLD_GRID,
    calibrated_thresholds,
    cases_to_certify,
    certified_threshold,
    conformal_threshold,
    hoeffding_bentkus_p_value,
    mask_precision_curve,
    missed_fraction_curve,
    threshold_for_coverage,
)


def test_the_missed_fraction_counts_lesion_pixels_below_each_threshold():
    probability = np.array([[0.1, 0.4], [0.6, 0.9]], np.float32)
    lesion = np.array([[True, True], [True, False]])
    curve = missed_fraction_curve(probability, lesion)
    assert curve[0] == 0.0 and curve[-1] == 1.0
    assert curve[np.searchsorted(THRESHOLD_GRID, 0.5)] == pytest.approx(2 / 3)
    assert np.all(np.diff(curve) >= 0), "a higher threshold never misses less"


def test_an_image_without_lesion_misses_nothing_and_an_empty_mask_has_no_precision():
    probability = np.full((4, 4), 0.3, np.float32)
    assert missed_fraction_curve(probability, np.zeros((4, 4), bool)).max() == 0.0
    precision = mask_precision_curve(probability, np.ones((4, 4), bool))
    assert precision[0] == 1.0 and np.isnan(precision[-1])


def test_the_threshold_falls_as_coverage_rises_and_respects_the_corrected_bound():
    generator = np.random.default_rng(0)
    curves = np.sort(generator.random((200, len(THRESHOLD_GRID))), axis=1)  # non-decreasing, like real curves
    thresholds = [conformal_threshold(curves, coverage) for coverage in (0.5, 0.8, 0.9, 0.95)]
    assert thresholds == sorted(thresholds, reverse=True)
    for coverage, threshold in zip((0.5, 0.8, 0.9, 0.95), thresholds, strict=True):
        column = np.searchsorted(THRESHOLD_GRID, threshold)
        assert (200 * curves[:, column].mean() + 1) / 201 <= 1 - coverage + 1e-12


def test_the_guarantee_holds_on_fresh_exchangeable_images():
    """Images drawn from one distribution: calibrate on some, and the others miss at most 1 − coverage
    on average over many calibration sets."""
    generator = np.random.default_rng(1)

    def image_curve() -> np.ndarray:
        size = 32
        lesion = np.zeros((size, size), bool)
        lesion[8:24, 8:24] = True
        probability = np.clip(lesion * 0.7 + generator.normal(0.15, 0.2, (size, size)), 0, 1)
        return missed_fraction_curve(probability, lesion)

    realised = []
    for _ in range(60):
        calibration = np.array([image_curve() for _ in range(40)])
        test = np.array([image_curve() for _ in range(40)])
        column = np.searchsorted(THRESHOLD_GRID, conformal_threshold(calibration, 0.9))
        realised.append(test[:, column].mean())
    assert np.mean(realised) <= 0.1


def test_a_requested_coverage_uses_the_calibrated_one_at_or_above_it():
    curves = np.sort(np.random.default_rng(2).random((100, len(THRESHOLD_GRID))), axis=1)
    thresholds = calibrated_thresholds([curves])
    assert threshold_for_coverage(thresholds, 0.9) == (thresholds["0.90"], 0.9)
    assert threshold_for_coverage(thresholds, 0.905) == (thresholds["0.91"], 0.91)
    with pytest.raises(ValueError, match="coverage must be between"):
        threshold_for_coverage(thresholds, 0.999)


def test_each_source_keeps_its_own_bound_so_the_lowest_threshold_wins():
    generator = np.random.default_rng(3)
    easy = np.sort(generator.random((300, len(THRESHOLD_GRID))) * 0.5, axis=1)
    hard = np.sort(generator.random((60, len(THRESHOLD_GRID))), axis=1)
    thresholds = calibrated_thresholds([easy, hard])
    assert thresholds["0.90"] == min(conformal_threshold(easy, 0.9), conformal_threshold(hard, 0.9))
    assert thresholds["0.90"] == conformal_threshold(hard, 0.9) < conformal_threshold(easy, 0.9)


def synthetic_missed_curves(count: int, generator: np.random.Generator) -> np.ndarray:
    """Cases whose lesions are missed from a threshold of their own on, linearly over 0.4 of the grid: a
    smooth, monotone family whose true mean risk is known in closed form through a large sample."""
    starts = generator.beta(2.0, 1.2, count)[:, None]
    return np.clip((THRESHOLD_GRID[None, :] - starts) / 0.4, 0.0, 1.0)


def test_a_certified_threshold_misses_more_than_promised_in_at_most_delta_of_calibration_sets():
    """Learn then Test's promise, checked where it is made: over many calibration sets of 50 cases, the
    threshold chosen on each is at or under the target risk in its true mean in at least 1 − δ of them.
    The true risk curve comes from 200,000 cases; 400 sets put the observed failure rate within 0.03 of its
    expectation (two binomial standard errors at δ = 0.1), so the check allows δ + 0.03."""
    generator = np.random.default_rng(7)
    true_risk = np.mean([synthetic_missed_curves(10_000, generator).mean(axis=0) for _ in range(20)], axis=0)
    coverage, delta, failures, certified = 0.9, 0.1, 0, 0
    for _ in range(400):
        threshold = certified_threshold(synthetic_missed_curves(50, generator), coverage, delta)
        if threshold is None:
            continue
        certified += 1
        failures += true_risk[np.searchsorted(THRESHOLD_GRID, threshold)] > 1 - coverage
    assert certified > 300  # 50 cases certify 0.90 here nearly always
    assert failures / certified <= delta + 0.03


def test_too_few_cases_certify_nothing_and_the_fewest_is_where_nothing_missed_reaches_delta():
    perfect = np.zeros((21, len(THRESHOLD_GRID)))
    assert cases_to_certify(0.9, 0.1) == 22
    assert certified_threshold(perfect, 0.9, 0.1) is None
    assert certified_threshold(np.zeros((22, len(THRESHOLD_GRID))), 0.9, 0.1) == 1.0
    assert hoeffding_bentkus_p_value(0.2, 1000, 0.1) == 1.0

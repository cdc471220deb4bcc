import numpy as np
import pytest

from lesionseg.evaluation.uncertainty_metrics import (
    PixelAccumulator,
    failures_removed_by_referring,
    risk_coverage,
    spearman,
)


def test_perfectly_calibrated_probabilities_have_no_ece():
    accumulator = PixelAccumulator(uncertainty_max=0.5)
    # In the 0.2 bin, 1 pixel in 5 is lesion; in the 0.8 bin, 4 in 5.
    probability = np.array([0.2] * 5 + [0.8] * 5)
    truth = np.array([1, 0, 0, 0, 0, 1, 1, 1, 1, 0], bool)
    accumulator.add(probability, np.zeros(10), truth, threshold=0.5)
    assert accumulator.expected_calibration_error() == pytest.approx(0.0)
    assert accumulator.brier_score() == pytest.approx(np.mean((probability - truth) ** 2))


def test_overconfident_probabilities_have_the_expected_ece():
    accumulator = PixelAccumulator(uncertainty_max=0.5)
    probability = np.full(10, 0.99)
    truth = np.array([1] * 5 + [0] * 5, bool)
    accumulator.add(probability, np.zeros(10), truth, threshold=0.5)
    assert accumulator.expected_calibration_error() == pytest.approx(0.49)


def test_uncertainty_that_singles_out_every_error_scores_one():
    accumulator = PixelAccumulator(uncertainty_max=0.5)
    truth = np.array([1, 1, 0, 0, 1, 0], bool)
    probability = np.array([0.9, 0.4, 0.1, 0.6, 0.8, 0.2])  # errors at indices 1 and 3
    uncertainty = np.array([0.01, 0.3, 0.02, 0.25, 0.03, 0.01])
    accumulator.add(probability, uncertainty, truth, threshold=0.5)
    detection = accumulator.error_detection()
    assert detection["auroc"] == pytest.approx(1.0)
    assert detection["auprc"] == pytest.approx(1.0)
    assert detection["ueo"] == pytest.approx(1.0)
    assert detection["error_rate"] == pytest.approx(2 / 6)


def test_uninformative_uncertainty_scores_one_half():
    accumulator = PixelAccumulator(uncertainty_max=0.5)
    truth = np.array([1, 0, 1, 0], bool)
    probability = np.array([0.9, 0.9, 0.1, 0.1])  # two errors, two correct
    accumulator.add(probability, np.full(4, 0.2), truth, threshold=0.5)
    assert accumulator.error_detection()["auroc"] == pytest.approx(0.5)


def test_spearman_handles_ties_and_direction():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 1, 2, 2]), np.array([1, 2, 3, 4])) == pytest.approx(0.894427, abs=1e-5)


def test_referral_removes_the_failures_it_ranks_first():
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.3, 0.05, 0.15, 0.25, 0.35, 0.12])
    jaccards = np.array([0.3, 0.9, 0.85, 0.5, 0.8, 0.95, 0.9, 0.88, 0.7, 0.9])
    assert failures_removed_by_referring(scores, jaccards, 0.1) == pytest.approx(0.5)
    assert failures_removed_by_referring(scores, jaccards, 0.2) == pytest.approx(1.0)
    curve = risk_coverage(scores, jaccards, steps=10)
    assert curve[0]["coverage"] == 1.0
    assert curve[2]["mean_thresholded_jaccard"] == pytest.approx(np.mean(jaccards[[1, 2, 4, 5, 6, 7, 8, 9]]))
    assert curve[2]["mean_thresholded_jaccard"] > curve[0]["mean_thresholded_jaccard"]

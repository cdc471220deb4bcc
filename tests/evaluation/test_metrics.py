import numpy as np
import pytest

from lesionseg.evaluation.metrics import mean_scores, score_masks


def test_hand_computed_case():
    # 4×4 image: truth is the left half (8 px); prediction is the left three columns (12 px).
    truth = np.zeros((4, 4), bool)
    truth[:, :2] = True
    predicted = np.zeros((4, 4), bool)
    predicted[:, :3] = True
    scores = score_masks(predicted, truth)
    # TP 8, FP 4, FN 0, TN 4
    assert scores.jaccard == pytest.approx(8 / 12)
    assert scores.thresholded_jaccard == pytest.approx(8 / 12)
    assert scores.dice == pytest.approx(16 / 20)
    assert scores.sensitivity == 1.0
    assert scores.specificity == pytest.approx(4 / 8)
    assert scores.accuracy == pytest.approx(12 / 16)


def test_thresholded_jaccard_is_zero_below_cutoff():
    truth = np.zeros((10, 10), bool)
    truth[:, :5] = True
    predicted = np.zeros((10, 10), bool)
    predicted[:, :3] = True  # Jaccard 30/50 = 0.6
    scores = score_masks(predicted, truth)
    assert scores.jaccard == pytest.approx(0.6)
    assert scores.thresholded_jaccard == 0.0


def test_empty_truth_and_prediction_is_perfect():
    empty = np.zeros((8, 8), bool)
    scores = score_masks(empty, empty)
    assert scores.jaccard == 1.0 and scores.dice == 1.0 and scores.sensitivity == 1.0


def test_macro_average_counts_each_image_once():
    truth = np.ones((2, 2), bool)
    perfect = score_masks(truth, truth)
    wrong = score_masks(~truth, truth)
    assert mean_scores([perfect, wrong])["jaccard"] == pytest.approx(0.5)

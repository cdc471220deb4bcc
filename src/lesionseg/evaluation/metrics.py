"""The ISIC 2018 Task 1 metrics, per image, as pure functions of boolean masks."""

from dataclasses import asdict, dataclass

import numpy as np

# The ISIC 2018 challenge counts an image whose Jaccard is below this as a failure (scored 0 in its
# thresholded Jaccard); the uncertainty evaluation uses the same line.
FAILURE_JACCARD = 0.65


METRIC_NAMES = ("jaccard", "thresholded_jaccard", "dice", "sensitivity", "specificity", "accuracy")


@dataclass(frozen=True)
class SegmentationScores:
    jaccard: float
    thresholded_jaccard: float
    dice: float
    sensitivity: float
    specificity: float
    accuracy: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _ratio(numerator: int, denominator: int) -> float:
    # An empty denominator means there was nothing to get wrong (e.g. no lesion and none predicted).
    return 1.0 if denominator == 0 else numerator / denominator


def score_masks(predicted: np.ndarray, truth: np.ndarray) -> SegmentationScores:
    """Scores one predicted mask against the expert mask (both boolean, same shape)."""
    if predicted.shape != truth.shape:
        raise ValueError(f"mask shapes differ: predicted {predicted.shape}, truth {truth.shape}")
    predicted = predicted.astype(bool)
    truth = truth.astype(bool)
    true_positive = int(np.count_nonzero(predicted & truth))
    false_positive = int(np.count_nonzero(predicted & ~truth))
    false_negative = int(np.count_nonzero(~predicted & truth))
    true_negative = predicted.size - true_positive - false_positive - false_negative
    jaccard = _ratio(true_positive, true_positive + false_positive + false_negative)
    return SegmentationScores(
        jaccard=jaccard,
        thresholded_jaccard=jaccard if jaccard >= FAILURE_JACCARD else 0.0,
        dice=_ratio(2 * true_positive, 2 * true_positive + false_positive + false_negative),
        sensitivity=_ratio(true_positive, true_positive + false_negative),
        specificity=_ratio(true_negative, true_negative + false_positive),
        accuracy=(true_positive + true_negative) / predicted.size,
    )


def mean_scores(scores: list[SegmentationScores]) -> dict[str, float]:
    """Macro average: every image counts once, whatever its size."""
    if not scores:
        raise ValueError("no scores to average")
    return {name: float(np.mean([getattr(score, name) for score in scores])) for name in METRIC_NAMES}

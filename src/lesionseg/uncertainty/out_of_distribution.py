"""Is this image dermoscopy at all? A distance from the training images in the model's own features.

MC dropout on the decoder's last layer says where a boundary is ambiguous; it cannot say that a
photograph of a leaf is not a skin lesion, and it answers such photographs with confident masks. The
trunk, which runs once per image anyway, also gives a descriptor of the whole image (the per-channel
means and standard deviations of the encoder's deepest features and of the trunk's last level; see
`SegmentationNetwork.forward_trunk_and_descriptor`). A Gaussian fitted on the training images' descriptors
summarises the domain, and an image far from it in Mahalanobis distance is out of distribution.

A distance alone misses pictures whose statistics happen to resemble dermoscopy's (fine textures, pages of
text). So the gate also holds a linear dermoscopy-vs-other classifier on the same descriptor, fitted on
training dermoscopy against a set of non-dermoscopic pictures that the evaluation set never shares a source
with. An image is flagged when either says so. Each has a threshold that few held-out dermoscopic images
exceed, and `ood_score` is the larger of the two ratios (the distance over its threshold, the classifier's
probability over its threshold), so 1.0 is the line. NumPy only: the torch-free server runs it."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Shrinks the covariance towards its diagonal, enough to keep it well conditioned: 768 features from a few
# thousand images. More shrinkage separated non-dermoscopic images less well (see docs/trust.md).
DEFAULT_SHRINKAGE = 0.01


@dataclass(frozen=True)
class GaussianSummary:
    """A mean and the whitening matrix W (W Wᵀ = covariance⁻¹) of the training images' features."""

    mean: np.ndarray
    whitening: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, shrinkage: float = DEFAULT_SHRINKAGE) -> "GaussianSummary":
        mean = features.mean(axis=0)
        covariance = np.cov(features, rowvar=False)
        covariance = (1 - shrinkage) * covariance + shrinkage * np.diag(np.diag(covariance))
        precision = np.linalg.inv(covariance)
        return cls(mean=mean, whitening=np.linalg.cholesky((precision + precision.T) / 2))

    def distances(self, features: np.ndarray) -> np.ndarray:
        return np.linalg.norm((features - self.mean) @ self.whitening, axis=1)


@dataclass(frozen=True)
class LinearClassifier:
    """Logistic regression on standardised features: P(not dermoscopy) = σ(((x − mean) / scale) · w + b)."""

    feature_mean: np.ndarray
    feature_scale: np.ndarray
    weights: np.ndarray
    bias: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.feature_mean) / self.feature_scale) @ self.weights + self.bias


def surprise(logits: np.ndarray | float) -> np.ndarray:
    """−log P(dermoscopy) under the classifier, softplus(logit): near 0 for clear dermoscopy, and growing
    without bound, about as the logit, as a picture looks less like it."""
    return np.logaddexp(0.0, np.asarray(logits, np.float64))


def logit_of_surprise(value: float) -> float:
    """The logit whose `surprise` is `value` (> 0): softplus's inverse."""
    return float(np.log(np.expm1(value)))


# What a statistics file holds for scoring; anything else in it is its classifier's fitting set.
GATE_ARRAYS = (
    "mean",
    "whitening",
    "classifier_feature_mean",
    "classifier_feature_scale",
    "classifier_weights",
    "classifier_bias",
)


@dataclass(frozen=True)
class ClassifierFitting:
    """What the gate's classifier was fitted on, kept in its statistics file so that a site can fit it again
    with its own dermoscopy added (`lesionseg calibrate-site`): a fixed sample of the dermoscopic descriptors, all
    the non-dermoscopic ones, and `loss_weight`, the weight its fit gave the data against the regularisation (the
    fit minimised ½‖w‖² + loss_weight × (mean loss on dermoscopy + mean loss on the others), w on standardised
    descriptors). float16 is enough: a descriptor's entries lie within ±15, where float16 rounds by at most 0.004,
    under 0.004 of any entry's standard deviation; the shipped classifier's logits on them move by at most 0.012."""

    dermoscopy: np.ndarray
    others: np.ndarray
    loss_weight: float

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "fitting_dermoscopy": self.dermoscopy.astype(np.float16),
            "fitting_others": self.others.astype(np.float16),
            "fitting_loss_weight": np.array([self.loss_weight]),
        }

    @classmethod
    def load(cls, path: Path) -> "ClassifierFitting | None":
        """The fitting set kept in a statistics file; None in one written before it was kept."""
        with np.load(path, allow_pickle=False) as stored:
            if "fitting_others" not in stored.files:
                return None
            return cls(
                dermoscopy=stored["fitting_dermoscopy"].astype(np.float64),
                others=stored["fitting_others"].astype(np.float64),
                loss_weight=float(stored["fitting_loss_weight"][0]),
            )


@dataclass(frozen=True)
class OutOfDistributionGate:
    summary: GaussianSummary
    threshold: float  # a Mahalanobis distance
    # Absent in gates fitted before 0.3.0 (and with `calibrate-ood` without --negatives): distance only.
    classifier: LinearClassifier | None = None
    classifier_threshold: float | None = None  # a logit

    def scores(self, descriptors: np.ndarray) -> np.ndarray:
        """One `ood_score` per image (N×D descriptors from the backend's trunk); at 1.0 or more it is flagged."""
        return np.max(np.stack(list(self.component_scores(descriptors).values())), axis=0)

    def component_scores(self, descriptors: np.ndarray) -> dict[str, np.ndarray]:
        """Each part's score on its own (1.0 = its own line), for measuring one against the other."""
        scores = {"distance": self.summary.distances(descriptors) / self.threshold}
        if self.classifier is not None:
            scores["classifier"] = self.classifier_scores(self.classifier.logits(descriptors))
        return scores

    def classifier_scores(self, logits: np.ndarray) -> np.ndarray:
        """The classifier's part: its surprise over the surprise at its line. Until 0.5.0 this was a ratio of
        probabilities, which cannot exceed 1 / P(line) (14.17 for the 0.5.0 gate), so a chart, a page of text
        and a face all scored the same; this ranks them, and flags exactly the same images, as both are
        increasing in the logit and 1.0 at the line."""
        return surprise(logits) / surprise(self.classifier_threshold)

    def save_statistics(self, path: Path, fitting: ClassifierFitting | None = None) -> None:
        """The Gaussian and the classifier, in one file, with what the classifier was fitted on where given;
        the thresholds go in the sidecar."""
        arrays = {"mean": self.summary.mean, "whitening": self.summary.whitening}
        if self.classifier is not None:
            arrays |= {
                "classifier_feature_mean": self.classifier.feature_mean,
                "classifier_feature_scale": self.classifier.feature_scale,
                "classifier_weights": self.classifier.weights,
                "classifier_bias": np.array([self.classifier.bias]),
            }
        # float32 halves the file; the scores it gives differ from float64's in the sixth digit.
        arrays = {name: array.astype(np.float32) for name, array in arrays.items()}
        if fitting is not None:
            arrays |= fitting.arrays()
        # Compressed: the whitening matrix is triangular, and its zeros then take no room (2.4 MB -> 1.1 MB).
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path, threshold: float, classifier_threshold: float | None) -> "OutOfDistributionGate":
        with np.load(path, allow_pickle=False) as stored:
            # The fitting set, where the file keeps one, is for `calibrate-site`, not for serving.
            arrays = {name: stored[name].astype(np.float64) for name in stored.files if name in GATE_ARRAYS}
        summary = GaussianSummary(mean=arrays["mean"], whitening=arrays["whitening"])
        if classifier_threshold is None or "classifier_weights" not in arrays:
            return cls(summary, threshold)
        classifier = LinearClassifier(
            feature_mean=arrays["classifier_feature_mean"],
            feature_scale=arrays["classifier_feature_scale"],
            weights=arrays["classifier_weights"],
            bias=float(arrays["classifier_bias"][0]),
        )
        return cls(summary, threshold, classifier, classifier_threshold)

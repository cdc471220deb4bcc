"""Is this image dermoscopy at all? A distance from the training images in the model's own features.

MC dropout on the decoder's last layer says where a boundary is ambiguous; it cannot say that a
photograph of a leaf is not a skin lesion, and it answers such photographs with confident masks. The
trunk, which runs once per image anyway, also gives a descriptor of the whole image (the per-channel
means and standard deviations of the encoder's deepest features and of the trunk's last level; see
`LesionSegmenter.forward_trunk_and_descriptor`). A Gaussian fitted on the training images' descriptors
summarises the domain, and an image far from it in Mahalanobis distance is out of distribution. The
threshold is a distance that few held-out dermoscopic images exceed; `ood_score` is the distance divided
by it, so 1.0 is the line. NumPy only: the torch-free server runs it."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Shrinks the covariance towards its diagonal, enough to keep it well conditioned: 768 features from a few
# thousand images. More shrinkage separated non-dermoscopic images less well (see the README).
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

    def save(self, path: Path) -> None:
        # float32 halves the file; the distances it gives differ from float64's in the sixth digit.
        np.savez(path, mean=self.mean.astype(np.float32), whitening=self.whitening.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> "GaussianSummary":
        with np.load(path, allow_pickle=False) as stored:
            return cls(mean=stored["mean"].astype(np.float64), whitening=stored["whitening"].astype(np.float64))


@dataclass(frozen=True)
class OutOfDistributionGate:
    summary: GaussianSummary
    threshold: float  # a Mahalanobis distance

    def scores(self, descriptors: np.ndarray) -> np.ndarray:
        """One `ood_score` per image (N×D descriptors from the backend's trunk): its distance over the
        threshold; at 1.0 or more it is flagged."""
        return self.summary.distances(descriptors) / self.threshold

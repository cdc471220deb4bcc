"""MC-dropout estimates of the lesion probability and of how unsure the model is about it.

Every dropout layer sits in the decoder's tail, so the encoder and most of the decoder are
deterministic: a backend runs that trunk once per image and only the tail is repeated, for all
samples as one batch. Channel masks are drawn here with NumPy from the request's seed (never a
global RNG), so a seed reproduces a result exactly and both backends apply identical masks.
NumPy only: the torch-free ONNX server runs this same code.
"""

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lesionseg.model.config import ModelConfig

MIN_SAMPLES = 1
MAX_SAMPLES = 64


class Backend(Protocol):
    """What MC sampling needs from an inference engine (PyTorch or ONNX Runtime)."""

    # {"device", "precision"}: where it runs, for /info.
    placement: dict[str, str]

    def trunk(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
        """The tail's inputs, and each image's descriptor for the out-of-distribution gate (N×D; None
        from an ONNX graph exported before the gate existed). The tail's inputs are only sliced by rows and
        handed back to the same backend's `tail`: on a GPU they stay there, as device tensors."""
        ...

    def tail(self, trunk: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
        """Each image's trunk, given once, and each dropout layer's masks, N·T rows -> logits N·T×1×S×S."""
        ...


@dataclass(frozen=True)
class UncertaintyMaps:
    """Per-pixel maps, shape N×H×W float32, at the model's input resolution."""

    mean_probability: np.ndarray
    uncertainty_std: np.ndarray
    # Binary entropy of the mean probability, in bits: 0 when certain, 1 at p = 0.5.
    predictive_entropy: np.ndarray


def check_samples(samples: int) -> None:
    if not MIN_SAMPLES <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be between {MIN_SAMPLES} and {MAX_SAMPLES}, got {samples}")


def draw_channel_masks(config: ModelConfig, count: int, seed: int) -> list[np.ndarray]:
    """One inverted-dropout channel mask per dropout layer, `count` rows each (count×C×1×1)."""
    generator = np.random.default_rng(seed)
    keep_probability = 1.0 - config.dropout_rate
    masks = []
    for channels in config.mask_channels:
        keep = generator.random((count, channels, 1, 1)) < keep_probability
        masks.append(keep.astype(np.float32) / np.float32(keep_probability))
    return masks


def repeat_trunk_for_old_graphs(trunk: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
    """Each image's trunk once per sample, for tail graphs exported by lesionseg 0.5.0 and earlier, which took it so."""
    samples = masks[0].shape[0] // trunk[0].shape[0]
    return [np.repeat(level, samples, axis=0) for level in trunk]


def sample_tail(backend: Backend, config: ModelConfig, trunk: list[np.ndarray], samples: int, seed: int) -> np.ndarray:
    """The trunk's features of N images -> logits N×T×S×S. Row n·T + t of the tail is sample t of image n."""
    check_samples(samples)
    batch_size = trunk[0].shape[0]
    logits = backend.tail(trunk, draw_channel_masks(config, batch_size * samples, seed))
    return logits.reshape(batch_size, samples, *logits.shape[-2:])


def sample_logits(backend: Backend, config: ModelConfig, images: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """images N×3×S×S (normalised) -> logits N×T×S×S."""
    check_samples(samples)
    return sample_tail(backend, config, backend.trunk(images)[0], samples, seed)


def sigmoid(values: np.ndarray) -> np.ndarray:
    """The logistic function in float32, in place on one copy. Clipping at ±30 keeps exp finite; past it the
    result is within 1e-13 of 0 or 1, which no threshold, mean or heatmap can see. exp ran at 1.6× tanh's
    speed here (no AVX-512), and this is a full map per sample."""
    result = np.clip(values, -30.0, 30.0).astype(np.float32, copy=False)
    np.negative(result, out=result)
    np.exp(result, out=result)
    result += 1.0
    return np.reciprocal(result, out=result)


def binary_entropy_bits(probability: np.ndarray) -> np.ndarray:
    clamped = np.clip(probability, 1e-7, 1 - 1e-7)
    return -(clamped * np.log2(clamped) + (1 - clamped) * np.log2(1 - clamped))


def summarise(logits: np.ndarray, temperature: float = 1.0) -> UncertaintyMaps:
    """logits N×T×H×W -> mean probability, its standard deviation over samples, entropy."""
    probabilities = sigmoid(logits * np.float32(1.0 / temperature))
    mean_probability = probabilities.mean(axis=1)
    return UncertaintyMaps(
        mean_probability=mean_probability,
        uncertainty_std=probabilities.std(axis=1),
        predictive_entropy=binary_entropy_bits(mean_probability).astype(np.float32),
    )

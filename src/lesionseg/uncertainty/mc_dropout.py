"""MC-dropout estimates of the lesion probability and of how unsure the model is about it.

Every dropout layer sits in the decoder's tail, so the encoder and most of the decoder are
deterministic: they run once per image and only the tail is repeated. Dropout masks are drawn
here from a seeded generator (never the global RNG), so a seed reproduces a result exactly, and
BatchNorm stays in inference mode throughout.
"""

from dataclasses import dataclass

import torch

from lesionseg.model.network import LesionSegmenter

MIN_SAMPLES = 1
MAX_SAMPLES = 64


@dataclass(frozen=True)
class UncertaintyMaps:
    """Per-pixel maps, shape N×H×W, at the model's input resolution."""

    mean_probability: torch.Tensor
    uncertainty_std: torch.Tensor
    # Binary entropy of the mean probability, in bits: 0 when certain, 1 at p = 0.5.
    predictive_entropy: torch.Tensor


def binary_entropy_bits(probability: torch.Tensor) -> torch.Tensor:
    clamped = probability.clamp(1e-7, 1 - 1e-7)
    return -(clamped * torch.log2(clamped) + (1 - clamped) * torch.log2(1 - clamped))


def draw_dropout_masks(
    model: LesionSegmenter, count: int, generator: torch.Generator, device: torch.device
) -> list[torch.Tensor]:
    """One channel mask per dropout layer and per sample, in a fixed order."""
    # Every decoder level and the fused map have the decoder's width, which the head reads.
    channels = model.decoder.head.in_channels
    return [layer.draw_mask(count, channels, generator, device) for layer in model.decoder.dropout_layers]


def summarise(probabilities: torch.Tensor) -> UncertaintyMaps:
    """probabilities: N×T×H×W samples -> mean, standard deviation, entropy."""
    mean_probability = probabilities.mean(dim=1)
    return UncertaintyMaps(
        mean_probability=mean_probability,
        uncertainty_std=probabilities.std(dim=1, correction=0),
        predictive_entropy=binary_entropy_bits(mean_probability),
    )


def check_samples(samples: int) -> None:
    if not MIN_SAMPLES <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be between {MIN_SAMPLES} and {MAX_SAMPLES}, got {samples}")


@torch.inference_mode()
def sample_logits(model: LesionSegmenter, images: torch.Tensor, samples: int, seed: int) -> torch.Tensor:
    """The cheap path: trunk once per image, all `samples` tail passes as one batch -> N×T×H×W logits."""
    check_samples(samples)
    model.eval()
    batch_size, _, height, width = images.shape
    trunk = model.forward_trunk(images)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    masks = draw_dropout_masks(model, batch_size * samples, generator, images.device)
    repeated = [level.repeat_interleave(samples, dim=0) for level in trunk]
    return model.forward_tail(repeated, (height, width), masks).view(batch_size, samples, height, width)


@torch.inference_mode()
def sample_mc_dropout(
    model: LesionSegmenter, images: torch.Tensor, samples: int, seed: int, temperature: float = 1.0
) -> UncertaintyMaps:
    """MC-dropout maps; `temperature` (from calibration) divides every sample's logits."""
    return summarise(torch.sigmoid(sample_logits(model, images, samples, seed) / temperature))


@torch.inference_mode()
def sample_full_passes(
    model: LesionSegmenter, images: torch.Tensor, samples: int, seed: int, temperature: float = 1.0
) -> UncertaintyMaps:
    """The seed's method: `samples` complete forward passes. Same masks as `sample_mc_dropout`
    for the same seed, so the two agree; kept as the reference and the benchmark's baseline."""
    check_samples(samples)
    model.eval()
    batch_size, _, height, width = images.shape
    generator = torch.Generator(device=images.device).manual_seed(seed)
    masks = draw_dropout_masks(model, batch_size * samples, generator, images.device)
    probabilities = torch.empty(batch_size, samples, height, width, device=images.device)
    for sample in range(samples):
        # Sample t of image n used mask row n * samples + t in the batched path.
        rows = torch.arange(batch_size, device=images.device) * samples + sample
        logits = model.forward_tail(model.forward_trunk(images), (height, width), [mask[rows] for mask in masks])
        probabilities[:, sample] = torch.sigmoid(logits / temperature)[:, 0]
    return summarise(probabilities)

"""Not the served method: the seed's MC dropout, T complete forward passes, kept only as the reference the
shared-trunk sampler (`sampling.py`) is tested against and the baseline `benchmarks/serving.py` measures."""

import numpy as np
import torch

from lesionseg.model.config import ModelConfig
from lesionseg.model.network import SegmentationNetwork
from lesionseg.uncertainty.sampling import check_samples, draw_channel_masks


@torch.inference_mode()
def full_pass_logits(
    model: SegmentationNetwork, config: ModelConfig, images: np.ndarray, samples: int, seed: int
) -> np.ndarray:
    """`samples` full passes (encoder included) with the masks `sample_logits` would draw -> N×T×S×S."""
    check_samples(samples)
    model.eval()
    batch_size, _, height, width = images.shape
    masks = [torch.from_numpy(mask) for mask in draw_channel_masks(config, batch_size * samples, seed)]
    tensor = torch.from_numpy(images)
    logits = np.empty((batch_size, samples, height, width), np.float32)
    for sample in range(samples):
        rows = torch.arange(batch_size) * samples + sample
        output = model.forward_tail(model.forward_trunk(tensor), (height, width), [mask[rows] for mask in masks])
        logits[:, sample] = output[:, 0].numpy()
    return logits

"""PyTorch eager inference on the loaded network."""

import numpy as np
import torch

from lesionseg.model.network import SegmentationNetwork


class TorchBackend:
    def __init__(self, model: SegmentationNetwork, input_size: int, threads: int = 0) -> None:
        self.model = model.eval()
        self.input_size = input_size
        if threads:
            torch.set_num_threads(threads)

    @torch.inference_mode()
    def trunk(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        levels, descriptor = self.model.forward_trunk_and_descriptor(torch.from_numpy(images))
        return [level.numpy() for level in levels], descriptor.numpy()

    @torch.inference_mode()
    def tail(self, trunk: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
        logits = self.model.forward_samples(
            [torch.from_numpy(level) for level in trunk],
            (self.input_size, self.input_size),
            [torch.from_numpy(mask) for mask in masks],
        )
        return logits.numpy()

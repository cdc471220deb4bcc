"""PyTorch eager inference on the loaded network."""

import numpy as np
import torch

from lesionseg.model.network import LesionSegmenter


class TorchBackend:
    name = "pytorch"

    def __init__(self, model: LesionSegmenter, input_size: int, threads: int = 0) -> None:
        self.model = model.eval()
        self.input_size = input_size
        if threads:
            torch.set_num_threads(threads)

    @torch.inference_mode()
    def trunk(self, images: np.ndarray) -> list[np.ndarray]:
        return [level.numpy() for level in self.model.forward_trunk(torch.from_numpy(images))]

    @torch.inference_mode()
    def tail(self, trunk: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
        logits = self.model.forward_tail(
            [torch.from_numpy(level) for level in trunk],
            (self.input_size, self.input_size),
            [torch.from_numpy(mask) for mask in masks],
        )
        return logits.numpy()

"""Turning RGB arrays into the normalised square tensors the model was trained on."""

import cv2
import numpy as np
import torch


def resize_to_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squashes to size×size, as the training images were; area averaging avoids aliasing."""
    if rgb.shape[:2] == (size, size):
        return rgb
    shrinking = rgb.shape[0] > size or rgb.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 NHWC -> float NCHW, scaled to 0-1 then standardised per channel."""
    images = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean_tensor = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return images.sub_(mean_tensor).div_(std_tensor)

"""Turning RGB arrays into the normalised square arrays the model was trained on. NumPy only."""

import cv2
import numpy as np


def resize_to_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squashes to size×size, as the training images were; area averaging avoids aliasing."""
    if rgb.shape[:2] == (size, size):
        return rgb
    shrinking = rgb.shape[0] > size or rgb.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def model_input(rgb: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """H×W×3 uint8 -> the normalised 1×3×S×S batch a model takes."""
    return normalise(resize_to_square(rgb, size)[None], mean, std)


def normalise(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 N×H×W×3 -> float32 N×3×H×W, scaled to 0-1 then standardised per channel."""
    scaled = images.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    mean_array = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std_array = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((scaled - mean_array) / std_array)

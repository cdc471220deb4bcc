"""Colour constancy: Shades of Gray (Finlayson and Trezzi, 2004), the preprocessing ISIC 2017 and 2018 entries used
against differences between dermatoscopes' light and sensors. Not on the served path: measured, on and off, by
`tools/colour_constancy.py` (docs/another-clinic.md)."""

import numpy as np

# Barata et al. (2015) found p = 6 best for dermoscopy.
DEFAULT_POWER = 6


def shades_of_gray(rgb: np.ndarray, power: int = DEFAULT_POWER) -> np.ndarray:
    """H×W×3 uint8 -> the same picture under a grey light. The light's colour is estimated as each channel's
    Minkowski p-mean, and each channel is scaled so that the estimate becomes grey at the same mean level."""
    values = rgb.astype(np.float32) / 255.0
    illuminant = np.power(np.mean(np.power(values, power), axis=(0, 1)), 1.0 / power)
    gains = illuminant.mean() / np.maximum(illuminant, 1e-6)
    return np.clip(values * gains * 255.0 + 0.5, 0, 255).astype(np.uint8)

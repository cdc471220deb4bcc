"""Camera-like shifts of a dermoscopic photo: what another clinic's dermatoscope, light, optics and compression
do to the same lesion. Pure functions of uint8 RGB arrays (and the mask, where the geometry changes), used at
fixed strengths by the shift test bed (`lesionseg evaluate --shifts`) and at random strengths by training's
augmentation, so the model is trained on the same kinds of shift it is measured on. NumPy and OpenCV only."""

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


def zoom_on_lesion(rgb: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """A close-up: a window 1/factor of each side, centred on the lesion (clipped to the photo), scaled back
    to the photo's size, so the lesion fills more of the frame, as when a dermatoscope touches a large one."""
    height, width = mask.shape
    # The mask's centre of mass: for a mask of 0 and 1 its pixels' mean position, for distillation's soft
    # targets (lesionseg.training.distillation) weighted by probability, as the GPU path's zoom_matrices does.
    weights = mask.astype(np.float64)
    total = weights.sum()
    centre_row, centre_column = (
        (weights.sum(axis=1) @ np.arange(height) / total, weights.sum(axis=0) @ np.arange(width) / total)
        if total
        else (height / 2, width / 2)
    )
    window_height, window_width = max(1, round(height / factor)), max(1, round(width / factor))
    top = int(np.clip(round(centre_row - window_height / 2), 0, height - window_height))
    left = int(np.clip(round(centre_column - window_width / 2), 0, width - window_width))
    crop = (slice(top, top + window_height), slice(left, left + window_width))
    zoomed_rgb = cv2.resize(rgb[crop], (width, height), interpolation=cv2.INTER_LINEAR)
    zoomed_mask = cv2.resize(mask[crop].astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return zoomed_rgb, zoomed_mask.astype(mask.dtype)


def rotate(rgb: np.ndarray, mask: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Turned about the centre; corners that come from outside the photo are mirrored skin, not black."""
    height, width = mask.shape
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    turned = cv2.warpAffine(rgb, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    turned_mask = cv2.warpAffine(
        mask.astype(np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101
    )
    return turned, turned_mask.astype(mask.dtype)


def colour_temperature(rgb: np.ndarray, shift: float) -> np.ndarray:
    """White balance: shift > 0 is warmer (red up, blue down), < 0 cooler; 0.15 is a tungsten-like cast."""
    gains = np.array([1 + shift, 1.0, 1 - shift], np.float32)
    return np.clip(rgb.astype(np.float32) * gains, 0, 255).astype(np.uint8)


def gamma(rgb: np.ndarray, value: float) -> np.ndarray:
    """Another tone curve: output = input^value (on 0-1); above 1 darkens the mid-tones."""
    table = np.clip(255 * (np.arange(256) / 255) ** value + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(rgb, table)


def exposure(rgb: np.ndarray, factor: float) -> np.ndarray:
    """More or less light: every channel scaled, saturating at white."""
    return np.clip(rgb.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8)


def vignette(rgb: np.ndarray, radius: float) -> np.ndarray:
    """A contact dermatoscope's dark ring: black outside a centred circle of `radius` × half the diagonal,
    with a soft edge 5 % of the diagonal wide, as the lens barrel shows in many clinics' photos."""
    height, width = rgb.shape[:2]
    half_diagonal = np.hypot(height, width) / 2
    rows, columns = np.ogrid[:height, :width]
    distance = np.hypot(rows - (height - 1) / 2, columns - (width - 1) / 2) / half_diagonal
    light = np.clip((radius - distance) / 0.1 + 0.5, 0, 1).astype(np.float32)
    return (rgb.astype(np.float32) * light[..., None] + 0.5).astype(np.uint8)


def blur(rgb: np.ndarray, sigma_fraction: float) -> np.ndarray:
    """Out of focus: a Gaussian whose sigma is `sigma_fraction` of the shorter side (so the same at any size)."""
    sigma = max(0.3, sigma_fraction * min(rgb.shape[:2]))
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Saved again as a JPEG at this quality, as a PACS or an e-mail does."""
    encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])[1]
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def rescale(rgb: np.ndarray, shorter_side: int) -> np.ndarray:
    """A lower-resolution camera: scaled down until the shorter side is `shorter_side` pixels (the model sees
    192), then back up to the same size. A photo already that small is left as it is."""
    height, width = rgb.shape[:2]
    factor = shorter_side / min(height, width)
    if factor >= 1:
        return rgb
    small = cv2.resize(
        rgb, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Shift:
    """One named shift at a fixed strength, applied to a photo and its mask."""

    name: str
    apply: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def photometric(function: Callable[..., np.ndarray], *arguments) -> Callable:
    """A shift that leaves the geometry, and so the mask, as it is."""
    return lambda rgb, mask: (function(rgb, *arguments), mask)


# The shift test bed: each kind at a strength a real device plausibly gives, one step past the mild.
SHIFTS: tuple[Shift, ...] = (
    Shift("none", lambda rgb, mask: (rgb, mask)),
    Shift("zoom 1.6×", lambda rgb, mask: zoom_on_lesion(rgb, mask, 1.6)),
    Shift("zoom 2.2×", lambda rgb, mask: zoom_on_lesion(rgb, mask, 2.2)),
    Shift("warm light", photometric(colour_temperature, 0.15)),
    Shift("cool light", photometric(colour_temperature, -0.15)),
    Shift("gamma 1.6", photometric(gamma, 1.6)),
    Shift("gamma 0.6", photometric(gamma, 0.6)),
    Shift("under-exposed 0.6", photometric(exposure, 0.6)),
    Shift("over-exposed 1.3", photometric(exposure, 1.3)),
    Shift("vignette", photometric(vignette, 0.8)),
    Shift("blur", photometric(blur, 0.01)),
    Shift("JPEG q20", photometric(jpeg, 20)),
    Shift("low resolution 64 px", photometric(rescale, 64)),
    Shift("rotated 30°", lambda rgb, mask: rotate(rgb, mask, 30)),
)

SHIFTS_BY_NAME = {shift.name: shift for shift in SHIFTS}


def random_camera_shift(
    rgb: np.ndarray, mask: np.ndarray, uniform: Callable[[], float]
) -> tuple[np.ndarray, np.ndarray]:
    """Training's augmentation: each kind of shift, independently, with its own probability and a strength
    drawn from a range that covers the test bed's. `uniform()` gives numbers in [0, 1) from the caller's
    seeded stream, so a resumed run replays its augmentation."""

    def between(low: float, high: float) -> float:
        return low + (high - low) * uniform()

    if uniform() < 0.3:
        rgb, mask = zoom_on_lesion(rgb, mask, between(1.1, 2.2))
    if uniform() < 0.5:
        rgb = colour_temperature(rgb, between(-0.2, 0.2))
    if uniform() < 0.5:
        rgb = gamma(rgb, float(np.exp(between(np.log(0.55), np.log(1.8)))))
    if uniform() < 0.4:
        rgb = exposure(rgb, between(0.55, 1.35))
    if uniform() < 0.2:
        rgb = vignette(rgb, between(0.6, 0.95))
    if uniform() < 0.2:
        rgb = blur(rgb, between(0.002, 0.012))
    if uniform() < 0.2:
        rgb = rescale(rgb, round(between(48, 160)))
    if uniform() < 0.25:
        rgb = jpeg(rgb, int(between(15, 80)))
    return rgb, mask

"""Pure functions from prediction arrays to pictures: mask panel, uncertainty heatmap, PNG bytes.

The slow ones (the overlay, PNG encoding) work in steps and call `cancellation.check()` between them,
so a request that stopped waiting stops its rendering within milliseconds, even at 64 megapixels.
"""

import io
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from lesionseg import cancellation

HeatmapScale = Literal["absolute", "per_image"]
# Rows of the overlay computed at once: a few MB of temporaries even at 8000 px wide.
OVERLAY_BAND_ROWS = 256
# Larger pictures are PNG-encoded in steps that can be cancelled (see encode_png).
UNINTERRUPTED_ENCODE_PIXELS = 4_000_000
# The standard deviation of a probability can never exceed 0.5.
MAX_POSSIBLE_STD = 0.5


def mask_levels(mask: np.ndarray) -> np.ndarray:
    """Boolean H×W -> uint8 0/255, with no wider array in between (at 64 MP an int64 one is 512 MB)."""
    return mask.view(np.uint8) * np.uint8(255)


def mask_panel(mask: np.ndarray) -> np.ndarray:
    """Boolean H×W -> RGB: lesion white, skin black."""
    return np.repeat(mask_levels(mask)[:, :, None], 3, axis=2)


def uncertainty_heatmap(
    uncertainty_std: np.ndarray,
    scale: HeatmapScale = "absolute",
    scale_max: float = MAX_POSSIBLE_STD,
    colormap: int = cv2.COLORMAP_INFERNO,
) -> np.ndarray:
    """Float H×W std -> RGB heatmap.

    INFERNO, as the seed drew it (black, no doubt, through purple and orange to pale yellow): perceptually
    uniform, unlike JET, so equal steps of uncertainty look like equal steps of colour, and it stays
    readable in grey. `absolute`: std 0..scale_max maps onto the whole colormap in every image, so one
    colour means one level of uncertainty everywhere. `per_image`: the seed's min–max stretch, which
    makes any image look alarming and maps incomparable; kept only as an option.
    """
    # In place on one float32 copy: a 64-megapixel map is 256 MB a copy.
    if scale == "per_image":
        low, high = float(uncertainty_std.min()), float(uncertainty_std.max())
        levels = np.subtract(uncertainty_std, low, dtype=np.float32)
        levels *= np.float32(255.0 / (high - low)) if high > low else np.float32(0.0)
    else:
        levels = np.multiply(uncertainty_std, np.float32(255.0 / scale_max), dtype=np.float32)
    levels += np.float32(0.5)
    np.clip(levels, 0, 255, out=levels)
    colours = cv2.applyColorMap(levels.astype(np.uint8), colormap)
    # OpenCV colormaps come out BGR; the seed showed them as RGB, swapping red and blue.
    return cv2.cvtColor(colours, cv2.COLOR_BGR2RGB, dst=colours)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    if left.shape != right.shape:
        raise ValueError(f"panels differ in shape: {left.shape} and {right.shape}")
    return np.concatenate([left, right], axis=1)


class CancellableSink(io.RawIOBase):
    """Where Pillow writes a PNG as it encodes it, about 64 KB at a time: each write is a chance to stop."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        cancellation.check()
        self.parts.append(bytes(data))
        return len(data)


def encode_png(image: np.ndarray) -> bytes:
    """RGB H×W×3 or gray H×W (8- or 16-bit) -> PNG bytes. Fast compression: these are large.

    OpenCV is 1.3–1.6× faster here but encodes in one uninterruptible call; above a few megapixels
    (half a second and more) Pillow encodes instead, handing over its output as it goes."""
    cancellation.check()
    if image.shape[0] * image.shape[1] > UNINTERRUPTED_ENCODE_PIXELS:
        sink = CancellableSink()
        Image.fromarray(image).save(sink, format="PNG", compress_level=1)
        return b"".join(sink.parts)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    success, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not success:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def combined_panels(
    mask: np.ndarray, uncertainty_std: np.ndarray, scale: HeatmapScale = "absolute", scale_max: float = MAX_POSSIBLE_STD
) -> np.ndarray:
    """The seed's picture: binary mask on the left, uncertainty heatmap on the right."""
    return side_by_side(mask_panel(mask), uncertainty_heatmap(uncertainty_std, scale, scale_max))


def uncertainty_to_uint16(uncertainty_std: np.ndarray) -> np.ndarray:
    """Std as 16-bit levels on a fixed scale: value = round(std / 0.5 × 65535)."""
    levels = np.multiply(uncertainty_std, np.float32(65535.0 / MAX_POSSIBLE_STD), dtype=np.float32)
    levels += np.float32(0.5)
    np.clip(levels, 0, 65535, out=levels)
    return levels.astype(np.uint16)


def outline_overlay(
    rgb: np.ndarray,
    mask: np.ndarray,
    uncertainty_std: np.ndarray,
    scale_max: float = MAX_POSSIBLE_STD,
    outline_rgb: tuple[int, int, int] = (0, 255, 0),
) -> np.ndarray:
    """The photo with the heatmap blended in where the model is unsure, and the lesion outlined."""
    height, width = mask.shape
    if rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    blended = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, OVERLAY_BAND_ROWS):
        cancellation.check()
        rows = slice(top, top + OVERLAY_BAND_ROWS)
        uncertainty = uncertainty_std[rows]
        heatmap = uncertainty_heatmap(uncertainty, "absolute", scale_max)
        # Opacity follows the uncertainty, so certain areas show the photo untouched.
        opacity = np.clip(uncertainty / scale_max, 0.0, 1.0)[:, :, None] * 0.7
        photo = rgb[rows].astype(np.float32)
        blended[rows] = (photo * (1.0 - opacity) + heatmap.astype(np.float32) * opacity).astype(np.uint8)
    cancellation.check()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(2, round(min(height, width) / 250))
    cv2.drawContours(blended, contours, -1, outline_rgb, thickness, lineType=cv2.LINE_AA)
    return blended

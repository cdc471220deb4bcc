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
from lesionseg.imaging.bands import bands_of

HeatmapScale = Literal["absolute", "per_image"]
# Larger pictures are PNG-encoded in steps that can be cancelled (see encode_png).
UNINTERRUPTED_ENCODE_PIXELS = 4_000_000
# The standard deviation of a probability can never exceed 0.5.
MAX_POSSIBLE_STD = 0.5


def mask_levels(mask: np.ndarray) -> np.ndarray:
    """Boolean H×W -> uint8 0/255, with no wider array in between (at 64 MP an int64 one is 512 MB)."""
    return mask.view(np.uint8) * np.uint8(255)


def heatmap_levels(
    uncertainty_std, scale: HeatmapScale = "absolute", scale_max: float = MAX_POSSIBLE_STD, top: int = 255
) -> np.ndarray:
    """Float H×W std (an array or bands, see `bands_of`) -> uint8 levels 0…`top`. `absolute`: std
    0…scale_max onto the whole range in every image, so one colour means one level of uncertainty
    everywhere. `per_image`: the seed's min–max stretch, which makes any image look alarming and maps
    incomparable; kept only as an option.

    Computed in bands of rows, so the float temporaries stay a few megabytes even at 64 megapixels."""
    if scale == "per_image":
        extremes = [(float(band.min()), float(band.max())) for _, band in bands_of(uncertainty_std)]
        low, high = min(low for low, _ in extremes), max(high for _, high in extremes)
        factor = top / (high - low) if high > low else 0.0
    else:
        low, factor = 0.0, top / scale_max
    levels = np.empty(uncertainty_std.shape, np.uint8)
    for rows, values in bands_of(uncertainty_std):
        band = np.subtract(values, np.float32(low), dtype=np.float32)
        band *= np.float32(factor)
        band += np.float32(0.5)
        np.clip(band, 0, top, out=band)
        levels[rows] = band
    return levels


def inferno(levels: np.ndarray) -> np.ndarray:
    """uint8 levels -> RGB, OpenCV's INFERNO as the seed drew it (black, no doubt, through purple and orange
    to pale yellow): perceptually uniform, unlike JET, so equal steps of uncertainty look like equal steps of
    colour, and it stays readable in grey."""
    colours = cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO)
    # OpenCV colormaps come out BGR; the seed showed them as RGB, swapping red and blue.
    return cv2.cvtColor(colours, cv2.COLOR_BGR2RGB, dst=colours)


def uncertainty_heatmap(
    uncertainty_std, scale: HeatmapScale = "absolute", scale_max: float = MAX_POSSIBLE_STD
) -> np.ndarray:
    """Float H×W std -> RGB heatmap (see `heatmap_levels` for the scales)."""
    return inferno(heatmap_levels(uncertainty_std, scale, scale_max))


# The seed's picture as one 8-bit palette image, a third of RGB's bytes to build and to encode. Entries
# 0–253 are the heatmap's levels (INFERNO sampled evenly from its 256 colours: one level in 128 fewer than
# the RGB heatmap, not a visible step); the mask panel uses the last two, pure black and pure white.
PANEL_HEATMAP_TOP = 253
PANEL_SKIN, PANEL_LESION = 254, 255
PANELS_PALETTE = np.concatenate(
    [
        inferno(np.round(np.arange(PANEL_HEATMAP_TOP + 1) * 255 / PANEL_HEATMAP_TOP).astype(np.uint8)[:, None])[:, 0],
        np.array([[0, 0, 0], [255, 255, 255]], np.uint8),
    ]
)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Boolean H×W -> an 8-bit 0/255 PNG, as the ISIC scorer reads it. No row filter and run-length
    compression suit a picture of two flat regions: at 12 megapixels 25 ms and 47 KB, against 67 ms and
    120 KB with the defaults. Fast enough to encode in one uninterruptible call even at 64 megapixels."""
    cancellation.check()
    options = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    options += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    success, encoded = cv2.imencode(".png", mask_levels(mask), options)
    if not success:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def combined_panels(
    mask: np.ndarray, uncertainty_std, scale: HeatmapScale = "absolute", scale_max: float = MAX_POSSIBLE_STD
) -> np.ndarray:
    """The seed's picture, binary mask on the left and uncertainty heatmap on the right, as H×2W indices
    into `PANELS_PALETTE` (which `encode_png(..., palette=PANELS_PALETTE)` writes into the file)."""
    height, width = mask.shape
    if uncertainty_std.shape != (height, width):
        raise ValueError(f"panels differ in shape: {mask.shape} and {uncertainty_std.shape}")
    panels = np.empty((height, 2 * width), np.uint8)
    np.add(mask.view(np.uint8), np.uint8(PANEL_SKIN), out=panels[:, :width])
    panels[:, width:] = heatmap_levels(uncertainty_std, scale, scale_max, PANEL_HEATMAP_TOP)
    return panels


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


def encode_png(image: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """RGB H×W×3 or gray H×W (8- or 16-bit) -> PNG bytes; with a 256×3 `palette`, H×W uint8 indices into it
    -> a palette PNG. Fast compression: these are large.

    OpenCV is 1.3–1.6× faster here but encodes in one uninterruptible call and writes no palettes; above a
    few megapixels (half a second and more), and for palettes, Pillow encodes instead, handing over its
    output as it goes."""
    cancellation.check()
    if palette is not None or image.shape[0] * image.shape[1] > UNINTERRUPTED_ENCODE_PIXELS:
        picture = Image.fromarray(image)
        if palette is not None:
            picture.putpalette(palette.tobytes())  # an 8-bit grey picture becomes a palette one
        sink = CancellableSink()
        picture.save(sink, format="PNG", compress_level=1)
        return b"".join(sink.parts)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    success, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not success:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def uncertainty_to_uint16(uncertainty_std) -> np.ndarray:
    """Std (an array or bands) as 16-bit levels on a fixed scale: value = round(std / 0.5 × 65535)."""
    levels = np.empty(uncertainty_std.shape, np.uint16)
    for rows, values in bands_of(uncertainty_std):
        band = np.multiply(values, np.float32(65535.0 / MAX_POSSIBLE_STD), dtype=np.float32)
        band += np.float32(0.5)
        np.clip(band, 0, 65535, out=band)
        levels[rows] = band
    return levels


def outline_overlay(
    rgb: np.ndarray,
    mask: np.ndarray,
    uncertainty_std,
    scale_max: float = MAX_POSSIBLE_STD,
    outline_rgb: tuple[int, int, int] = (0, 255, 0),
) -> np.ndarray:
    """The photo with the heatmap blended in where the model is unsure, and the lesion outlined."""
    height, width = mask.shape
    if rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    blended = np.empty((height, width, 3), np.uint8)
    for rows, uncertainty in bands_of(uncertainty_std):
        cancellation.check()
        heatmap = uncertainty_heatmap(uncertainty, "absolute", scale_max)
        # Opacity follows the uncertainty, so certain areas show the photo untouched.
        opacity = np.clip(uncertainty / scale_max, 0.0, 1.0)[:, :, None] * 0.7
        photo = rgb[rows].astype(np.float32)
        blended[rows] = (photo * (1.0 - opacity) + heatmap.astype(np.float32) * opacity).astype(np.uint8)
    cancellation.check()
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(2, round(min(height, width) / 250))
    cv2.drawContours(blended, contours, -1, outline_rgb, thickness, lineType=cv2.LINE_AA)
    return blended

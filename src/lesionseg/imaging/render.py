"""Pure functions from prediction arrays to pictures: mask panel, uncertainty heatmap, PNG bytes.

The slow ones (the overlay, PNG encoding) work in steps and call `cancellation.check()` between them,
so a request that stopped waiting stops its rendering within milliseconds, even at 64 megapixels.
"""

import io
import struct
import zlib
from collections.abc import Iterable, Iterator
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
    low, factor = heatmap_scaling(uncertainty_std, scale, scale_max, top)
    levels = np.empty(uncertainty_std.shape, np.uint8)
    for rows, values in bands_of(uncertainty_std):
        levels[rows] = band_levels(values, low, factor, top)
    return levels


def heatmap_scaling(uncertainty_std, scale: HeatmapScale, scale_max: float, top: int) -> tuple[float, float]:
    """(low, factor): a std becomes the level (std − low) × factor, rounded and clipped to 0…`top`."""
    if scale == "per_image":
        extremes = [(float(band.min()), float(band.max())) for _, band in bands_of(uncertainty_std)]
        low, high = min(low for low, _ in extremes), max(high for _, high in extremes)
        return low, top / (high - low) if high > low else 0.0
    return 0.0, top / scale_max


def band_levels(values: np.ndarray, low: float, factor: float, top: int) -> np.ndarray:
    band = np.subtract(values, np.float32(low), dtype=np.float32)
    band *= np.float32(factor)
    band += np.float32(0.5)
    np.clip(band, 0, top, out=band)
    return band.astype(np.uint8)


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


def panel_bands(
    mask: np.ndarray, uncertainty_std, scale: HeatmapScale = "absolute", scale_max: float = MAX_POSSIBLE_STD
) -> Iterator[np.ndarray]:
    """The seed's picture, binary mask on the left and uncertainty heatmap on the right, as bands of rows of
    H×2W indices into `PANELS_PALETTE`, top to bottom: never whole (128 MB at 64 megapixels)."""
    height, width = mask.shape
    if uncertainty_std.shape != (height, width):
        raise ValueError(f"panels differ in shape: {mask.shape} and {uncertainty_std.shape}")
    low, factor = heatmap_scaling(uncertainty_std, scale, scale_max, PANEL_HEATMAP_TOP)
    for rows, values in bands_of(uncertainty_std):
        band = np.empty((values.shape[0], 2 * width), np.uint8)
        np.add(mask[rows].view(np.uint8), np.uint8(PANEL_SKIN), out=band[:, :width])
        band[:, width:] = band_levels(values, low, factor, PANEL_HEATMAP_TOP)
        yield band


def combined_panels(
    mask: np.ndarray, uncertainty_std, scale: HeatmapScale = "absolute", scale_max: float = MAX_POSSIBLE_STD
) -> np.ndarray:
    """`panel_bands` whole: H×2W indices into `PANELS_PALETTE`."""
    return np.concatenate(list(panel_bands(mask, uncertainty_std, scale, scale_max)))


def encode_png_bands(bands: Iterable[np.ndarray], width: int, height: int, palette: np.ndarray | None = None) -> bytes:
    """PNG bytes of a picture given as bands of rows (H_b×W grey or palette indices, or H_b×W×3 RGB; uint8, or
    uint16 for 16-bit grey), top to bottom, compressed fast (zlib level 1) as they come: the picture is never
    whole, and its compressed bytes are written once, into the output. Palette rows are unfiltered, as
    palette pictures are best written; other rows take the Sub filter (each byte less the same byte of the
    pixel to its left), which halves a smooth 16-bit map and matches Pillow's adaptive filters on a photo."""
    compressor = zlib.compressobj(1)
    output = bytearray(b"\x89PNG\r\n\x1a\n")
    header, rows_written = None, 0
    for band in bands:
        cancellation.check()
        if header is None:
            colour_type = 3 if palette is not None else 2 if band.ndim == 3 else 0
            bit_depth = 16 if band.dtype == np.uint16 else 8
            header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
            append_chunk(output, b"IHDR", header)
            if palette is not None:
                append_chunk(output, b"PLTE", palette.astype(np.uint8).tobytes())
            data_start = len(output)
            output += b"\0\0\0\0IDAT"  # the length is written once known
        rows = filtered_rows(band, sub_filter=palette is None)
        output += compressor.compress(rows)
        rows_written += band.shape[0]
    if rows_written != height or header is None:
        raise ValueError(f"{rows_written} rows given for a picture {height} rows high")
    output += compressor.flush()
    length = len(output) - data_start - 8
    struct.pack_into(">I", output, data_start, length)
    output += struct.pack(">I", zlib.crc32(memoryview(output)[data_start + 4 :]))
    append_chunk(output, b"IEND", b"")
    return bytes(output)


def filtered_rows(band: np.ndarray, sub_filter: bool) -> np.ndarray:
    """A band's rows as PNG stores them: big-endian samples, each row led by its filter type, 0 (none) or 1
    (Sub: each byte less the byte one pixel to its left, modulo 256)."""
    samples = band.reshape(band.shape[0], -1).astype(">u2" if band.dtype == np.uint16 else np.uint8, copy=False)
    row_bytes = samples.view(np.uint8)
    rows = np.empty((band.shape[0], 1 + row_bytes.shape[1]), np.uint8)
    rows[:, 0] = 1 if sub_filter else 0
    rows[:, 1:] = row_bytes
    if sub_filter:
        pixel_bytes = (band.shape[2] if band.ndim == 3 else 1) * samples.itemsize
        np.subtract(row_bytes[:, pixel_bytes:], row_bytes[:, :-pixel_bytes], out=rows[:, 1 + pixel_bytes :])
    return rows


def append_chunk(output: bytearray, kind: bytes, body: bytes) -> None:
    output += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


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


def probability_bands(probability) -> Iterator[np.ndarray]:
    """Probability (an array or bands) as 8-bit levels, round(255 p), a band of rows at a time."""
    for _, values in bands_of(probability):
        yield np.rint(values * np.float32(255)).astype(np.uint8)


def probability_to_uint8(probability) -> np.ndarray:
    """`probability_bands` whole."""
    return np.concatenate(list(probability_bands(probability)))


def uncertainty_uint16_bands(uncertainty_std) -> Iterator[np.ndarray]:
    """Std (an array or bands) as 16-bit levels on a fixed scale, value = round(std / 0.5 × 65535), a band of
    rows at a time."""
    for _, values in bands_of(uncertainty_std):
        band = np.multiply(values, np.float32(65535.0 / MAX_POSSIBLE_STD), dtype=np.float32)
        band += np.float32(0.5)
        np.clip(band, 0, 65535, out=band)
        yield band.astype(np.uint16)


def uncertainty_to_uint16(uncertainty_std) -> np.ndarray:
    """`uncertainty_uint16_bands` whole."""
    return np.concatenate(list(uncertainty_uint16_bands(uncertainty_std)))


def heatmap_bands(uncertainty_std, scale_max: float = MAX_POSSIBLE_STD) -> Iterator[np.ndarray]:
    """`uncertainty_heatmap` on the absolute scale (which needs no pass over the whole map first), a band
    of rows at a time."""
    for _, values in bands_of(uncertainty_std):
        yield uncertainty_heatmap(values, "absolute", scale_max)


def overlay_bands(
    photo,
    mask: np.ndarray,
    uncertainty_std,
    scale_max: float = MAX_POSSIBLE_STD,
    outline_rgb: tuple[int, int, int] = (0, 255, 0),
) -> Iterator[np.ndarray]:
    """The photo (an RGB array, resized to the mask's size if it is not, or RGB bands of BAND_ROWS rows, see
    `bands_of`) with the heatmap blended in where the model is unsure, and the lesion outlined, as bands of
    rows, top to bottom: never whole beside the photo (192 MB more at 64 megapixels). Each band draws the
    outline's pieces that cross it, shifted into it."""
    height, width = mask.shape
    if isinstance(photo, np.ndarray) and photo.shape[:2] != (height, width):
        photo = cv2.resize(photo, (width, height), interpolation=cv2.INTER_LINEAR)
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(2, round(min(height, width) / 250))
    for (rows, uncertainty), (_, photo_band) in zip(bands_of(uncertainty_std), bands_of(photo), strict=True):
        cancellation.check()
        band = blend_heatmap(photo_band, uncertainty, scale_max)
        yield draw_outline(band, contours, rows.start, thickness, outline_rgb)


def blend_heatmap(photo: np.ndarray, uncertainty: np.ndarray, scale_max: float) -> np.ndarray:
    """photo + opacity × (heatmap − photo), with the opacity following the uncertainty (up to 0.7), so certain
    areas show the photo untouched. In place in one float band: at 8000 pixels wide, each float copy of a
    band of RGB is 24 MB."""
    opacity = np.clip(uncertainty / np.float32(scale_max), 0.0, 1.0)
    opacity *= np.float32(0.7)
    blended = uncertainty_heatmap(uncertainty, "absolute", scale_max).astype(np.float32)
    blended -= photo
    blended *= opacity[:, :, None]
    blended += photo
    return blended.astype(np.uint8)


def draw_outline(band: np.ndarray, contours, top: int, thickness: int, colour: tuple[int, int, int]) -> np.ndarray:
    """The outline's pieces that cross a band of rows starting at row `top`, drawn into it as on the whole
    picture: the anti-aliased coverage is drawn with a margin of the line's width above and below, so that
    no seam shows where bands meet, then blended in."""
    margin = thickness + 2
    coverage = np.zeros((band.shape[0] + 2 * margin, band.shape[1]), np.uint8)
    cv2.drawContours(coverage, contours, -1, 255, thickness, lineType=cv2.LINE_AA, offset=(0, margin - top))
    alpha = coverage[margin : margin + band.shape[0], :, None].astype(np.float32) / 255
    if not alpha.any():
        return band
    return (band * (1 - alpha) + np.array(colour, np.float32) * alpha + 0.5).astype(np.uint8)


def outline_overlay(
    photo,
    mask: np.ndarray,
    uncertainty_std,
    scale_max: float = MAX_POSSIBLE_STD,
    outline_rgb: tuple[int, int, int] = (0, 255, 0),
) -> np.ndarray:
    """`overlay_bands` whole: H×W×3 RGB."""
    return np.concatenate(list(overlay_bands(photo, mask, uncertainty_std, scale_max, outline_rgb)))

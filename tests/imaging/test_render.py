import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from lesionseg.imaging.render import (
    PANELS_PALETTE,
    combined_panels,
    encode_mask_png,
    encode_png,
    encode_png_bands,
    outline_overlay,
    panel_bands,
    uncertainty_heatmap,
    uncertainty_to_uint16,
)


def decoded_rgb(png: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_panels_keep_the_image_size_side_by_side():
    mask = np.zeros((30, 50), bool)
    picture = combined_panels(mask, np.zeros((30, 50), np.float32))
    assert picture.shape == (30, 100)


def test_the_panels_png_is_a_palette_png_with_a_binary_mask_and_the_heatmap_colours():
    generator = np.random.default_rng(0)
    mask = generator.random((20, 30)) > 0.5
    std = generator.uniform(0, 0.05, (20, 30)).astype(np.float32)
    png = encode_png_bands(panel_bands(mask, std, scale_max=0.05), 60, 20, palette=PANELS_PALETTE)
    assert Image.open(io.BytesIO(png)).mode == "P"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), combined_panels(mask, std, scale_max=0.05))
    rgb = decoded_rgb(png)
    assert rgb.shape == (20, 60, 3)
    assert set(np.unique(rgb[:, :30])) <= {0, 255}
    assert np.array_equal(rgb[:, :30, 0] == 255, mask)
    # 254 palette levels against the RGB heatmap's 256: each pixel within about a level of its colour.
    difference = np.abs(rgb[:, 30:].astype(int) - uncertainty_heatmap(std, scale_max=0.05).astype(int))
    all_levels = uncertainty_heatmap(np.linspace(0, 0.05, 256, dtype=np.float32)[None], scale_max=0.05)
    one_level = np.abs(np.diff(all_levels.astype(int), axis=1)).max()
    assert difference.max() <= 2 * one_level


def test_a_png_written_band_by_band_is_the_picture_in_any_reader():
    """Grey, RGB and 16-bit grey, each through the Sub filter, and palette indices unfiltered."""
    generator = np.random.default_rng(1)
    pictures = (
        generator.integers(0, 256, (37, 23), np.uint8),
        generator.integers(0, 256, (37, 23, 3), np.uint8),
        generator.integers(0, 65536, (37, 23), np.uint16),
    )
    for picture in pictures:
        bands = (picture[start : start + 10] for start in range(0, 37, 10))
        png = encode_png_bands(bands, 23, 37)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))).astype(picture.dtype), picture)
        decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded.dtype == picture.dtype
        assert np.array_equal(decoded if picture.ndim == 2 else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), picture)
    indices = generator.integers(0, 256, (37, 23), np.uint8)
    png = encode_png_bands(iter([indices]), 23, 37, palette=PANELS_PALETTE)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), indices)
    with pytest.raises(ValueError, match="rows"):
        encode_png_bands(iter([np.zeros((3, 4), np.uint8)]), 4, 5)


def test_heatmap_is_inferno_in_rgb_order():
    # INFERNO: no uncertainty is black, the most is pale yellow, half-way a red that BGR order would make blue.
    calm = uncertainty_heatmap(np.zeros((4, 4), np.float32), scale_max=0.05)
    half = uncertainty_heatmap(np.full((4, 4), 0.025, np.float32), scale_max=0.05)
    alarmed = uncertainty_heatmap(np.full((4, 4), 0.05, np.float32), scale_max=0.05)
    assert calm[0, 0].sum() < 30
    red, _, blue = half[0, 0]
    assert red > 150 and blue < 100
    red, green, blue = alarmed[0, 0]
    assert red > 240 and green > 240 and blue < 200


def test_absolute_scale_gives_one_colour_per_level_in_every_image():
    low_image = np.array([[0.0, 0.1]], np.float32)
    high_image = np.array([[0.1, 0.4]], np.float32)
    assert np.array_equal(uncertainty_heatmap(low_image)[0, 1], uncertainty_heatmap(high_image)[0, 0])


def test_per_image_scale_stretches_each_image():
    low_image = np.array([[0.0, 0.1]], np.float32)
    high_image = np.array([[0.0, 0.4]], np.float32)
    assert np.array_equal(
        uncertainty_heatmap(low_image, scale="per_image")[0, 1],
        uncertainty_heatmap(high_image, scale="per_image")[0, 1],
    )


def test_png_round_trip_keeps_rgb_order():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = 255  # pure red
    assert np.array_equal(decoded_rgb(encode_png(image)), image)


def test_the_sub_filter_halves_a_smooth_16_bit_map():
    """An uncertainty map is smooth, upsampled from the model's resolution: its low bytes change at every
    pixel, and differences from the left neighbour are small, so they compress."""
    smooth = cv2.resize(np.random.default_rng(0).random((48, 48), dtype=np.float32), (800, 600)) * 0.2
    levels = uncertainty_to_uint16(smooth)
    filtered = encode_png_bands(iter([levels]), 800, 600)
    rows = np.zeros((600, 1 + 1600), np.uint8)  # the same rows unfiltered
    rows[:, 1:] = levels.astype(">u2").view(np.uint8)
    assert len(filtered) < 0.6 * len(zlib.compress(rows.tobytes(), 1))


def test_uncertainty_levels_are_on_a_fixed_16_bit_scale():
    levels = uncertainty_to_uint16(np.array([[0.0, 0.25, 0.5, 0.7]], np.float32))
    assert levels.dtype == np.uint16
    assert levels.tolist() == [[0, 32768, 65535, 65535]]


def test_the_mask_png_is_8_bit_0_and_255_as_the_isic_scorer_reads_it():
    mask = np.random.default_rng(1).random((40, 70)) > 0.5
    decoded = np.asarray(Image.open(io.BytesIO(encode_mask_png(mask))))
    assert decoded.dtype == np.uint8 and decoded.shape == (40, 70)
    assert np.array_equal(decoded, mask.astype(np.uint8) * 255)


def test_the_overlay_drawn_band_by_band_has_no_seams():
    """Where bands meet, the outline is drawn as on the whole picture: anti-aliasing may round a few levels
    differently along the line, never leave a notch."""
    generator = np.random.default_rng(0)
    height, width = 700, 500  # three bands of 256 rows
    rgb = generator.integers(0, 256, (height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (250, 350), 200, 1, -1)
    mask = mask.astype(bool)
    std = np.zeros((height, width), np.float32)
    overlay = outline_overlay(rgb, mask, std)
    whole = rgb.copy()
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(whole, contours, -1, (0, 255, 0), 2, lineType=cv2.LINE_AA)
    assert np.abs(overlay.astype(int) - whole.astype(int)).max() <= 4

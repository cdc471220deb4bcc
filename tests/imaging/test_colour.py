"""Shades of Gray undoes a coloured light: a real photo and the same photo under a warm cast come out alike."""

import numpy as np

from lesionseg.data.pairs import read_image
from lesionseg.imaging.colour import shades_of_gray


def test_a_photo_under_a_warm_light_comes_out_as_under_a_grey_one(real_image_path):
    rgb = read_image(real_image_path)
    # A warm cast, kept below the top so that no channel clips: the estimate then scales exactly back.
    dimmed = (rgb.astype(np.float32) * 0.7).astype(np.uint8)
    warm = np.clip(dimmed * np.array([1.25, 1.0, 0.75], np.float32), 0, 255).astype(np.uint8)
    corrected_plain, corrected_warm = shades_of_gray(dimmed).astype(int), shades_of_gray(warm).astype(int)
    # Each channel's gain is the same up to 8-bit rounding of the cast, a level or two per pixel.
    assert np.abs(corrected_plain - corrected_warm).mean() < 1.5
    assert np.abs(dimmed.astype(int) - warm.astype(int)).mean() > 10


def test_a_grey_lit_photo_keeps_its_brightness():
    generator = np.random.default_rng(0)
    grey = np.repeat(generator.integers(40, 200, size=(64, 64, 1), dtype=np.uint8), 3, axis=2)
    assert np.array_equal(shades_of_gray(grey), grey)

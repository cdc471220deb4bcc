"""Full-size maps made a band at a time (`MapBands`) against OpenCV's whole resize."""

import cv2
import numpy as np
import pytest

from lesionseg.imaging.bands import WHOLE_MAP_PIXELS, MapBands


@pytest.mark.parametrize(
    ("width", "height"), [(1024, 768), (4000, 3000), (333, 7777), pytest.param(8000, 8000, marks=pytest.mark.slow)]
)
def test_bands_join_into_opencvs_bilinear_resize(width, height):
    values = cv2.GaussianBlur(np.random.default_rng(0).random((192, 192)).astype(np.float32), (9, 9), 2)
    expected = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
    bands = MapBands(values, width, height)
    joined = np.concatenate([band.copy() for _, band in bands])
    assert joined.shape == (height, width)
    assert np.abs(joined - expected).max() < 1e-5
    assert np.array_equal(bands.whole(), joined)
    threshold = float(np.median(values))
    assert ((joined >= threshold) != (expected >= threshold)).mean() < 1e-5
    if width * height <= WHOLE_MAP_PIXELS:
        assert np.array_equal(joined, expected), "small maps are OpenCV's own"


def test_band_rows_cover_the_image_once_in_order():
    rows = [rows for rows, _ in MapBands(np.zeros((192, 192), np.float32), 5000, 1001)]
    covered = np.concatenate([np.arange(1001)[part] for part in rows])
    assert np.array_equal(covered, np.arange(1001))

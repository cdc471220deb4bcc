import itertools

import numpy as np
import pytest

from lesionseg.data.pairs import read_image, read_truth
from lesionseg.imaging.shifts import (
    SHIFTS,
    colour_temperature,
    exposure,
    gamma,
    jpeg,
    random_camera_shift,
    rescale,
    vignette,
    zoom_on_lesion,
)


@pytest.fixture(scope="module")
def real_pair(isic_validation_pairs):
    record = isic_validation_pairs[0]
    return read_image(record.image_path), read_truth(record.mask_path)


def test_every_shift_keeps_the_photo_and_mask_shapes_and_types(real_pair):
    rgb, mask = real_pair
    for shift in SHIFTS:
        shifted, shifted_mask = shift.apply(rgb, mask)
        assert shifted.shape == rgb.shape and shifted.dtype == np.uint8, shift.name
        assert shifted_mask.shape == mask.shape and shifted_mask.dtype == mask.dtype, shift.name


def test_a_zoom_makes_the_lesion_fill_more_of_the_frame_and_moves_the_mask_with_the_photo(real_pair):
    rgb, mask = real_pair
    zoomed, zoomed_mask = zoom_on_lesion(rgb, mask, 2.0)
    assert zoomed_mask.mean() > mask.mean()
    # The photo's own lesion pixels are darker than its skin; that must still hold where the mask moved to.
    assert zoomed[zoomed_mask].mean() < zoomed[~zoomed_mask].mean()


def test_photometric_shifts_move_brightness_and_colour_the_way_their_names_say():
    grey = np.full((40, 60, 3), 128, np.uint8)
    warm = colour_temperature(grey, 0.15)
    assert warm[..., 0].mean() > 128 > warm[..., 2].mean()
    assert gamma(grey, 1.6).mean() < 128 < gamma(grey, 0.6).mean()
    assert exposure(grey, 0.6).mean() < 128 < exposure(grey, 1.3).mean()
    ringed = vignette(grey, 0.8)
    assert ringed[0, 0].max() == 0 and (ringed[20, 30] == 128).all()


def test_degradations_lose_detail_but_keep_the_picture(real_pair):
    rgb, _ = real_pair
    for degraded in (jpeg(rgb, 20), rescale(rgb, 64)):
        difference = np.abs(degraded.astype(int) - rgb.astype(int))
        assert 0 < difference.mean() < 20


def test_training_augmentation_replays_from_the_same_stream_and_varies_otherwise(real_pair):
    rgb, mask = real_pair

    def stream(seed):
        generator = np.random.default_rng(seed)
        return lambda: float(generator.random())

    first = random_camera_shift(rgb, mask, stream(1))
    again = random_camera_shift(rgb, mask, stream(1))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    outputs = [random_camera_shift(rgb, mask, stream(seed))[0] for seed in range(2, 6)]
    assert any(not np.array_equal(a, b) for a, b in itertools.combinations(outputs, 2))

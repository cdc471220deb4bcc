"""Whole batches augmented on the training device: each item its own draw, image and mask moved together,
the same draws for the same step, and the camera's blur, resolution, JPEG and zoom as their CPU references in
imaging/shifts.py make them. Run here on the CPU (the code is device-agnostic); its cost on a GPU, by
benchmarks/gpu_augmentation.py."""

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from tests.training.test_loop import tiny_options, train_in_a_fresh_process

from lesionseg.data.pairs import discover_pairs
from lesionseg.imaging.shifts import jpeg, rescale, zoom_on_lesion
from lesionseg.training.data import load_square_arrays
from lesionseg.training.gpu_augmentation import (
    DevicePairs,
    degrade_optics,
    gaussian_blur,
    lower_resolution,
    recompress_jpeg,
    resample,
    zoom_matrices,
)

SIZE = 64
MEAN = STD = (0.5, 0.5, 0.5)


def red_lesions_on_green_skin(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Off-centre discs, red on green, so a pixel's colour says which side of the mask it is on."""
    rows, columns = np.mgrid[:SIZE, :SIZE]
    masks = np.zeros((count, SIZE, SIZE), np.uint8)
    for index in range(count):
        masks[index] = (rows - 20 - index) ** 2 + (columns - 26) ** 2 < 14**2
    images = np.where(masks[..., None] == 1, np.uint8([220, 30, 30]), np.uint8([30, 220, 30]))
    return images.astype(np.uint8), masks


def augmented(pairs: DevicePairs, indices: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return pairs.batch(indices, torch.Generator().manual_seed(seed))


def test_the_mask_moves_with_its_image_under_every_draw():
    pairs = DevicePairs(*red_lesions_on_green_skin(8), MEAN, STD, torch.device("cpu"))
    images, masks = augmented(pairs, list(range(8)) * 4, seed=1)
    assert images.shape == (32, 3, SIZE, SIZE) and masks.shape == (32, 1, SIZE, SIZE)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    rgb = images * 0.5 + 0.5
    # Inside the picture (the border the turn brings in is black), red over green is the lesion. Colour jitter
    # moves each channel by at most ±20 % three times and a hue turn of 0.03: red stays above green.
    inside = rgb.sum(dim=1) > 0.15
    looks_red = rgb[:, 0] > rgb[:, 1]
    agreement = (looks_red == (masks[:, 0] == 1))[inside].float().mean().item()
    # Only the 1-pixel band along each edge, where bilinear sampling mixes the two, may disagree.
    assert agreement > 0.97


def test_each_item_draws_its_own_turn_and_a_step_replays_its_draws():
    pairs = DevicePairs(*red_lesions_on_green_skin(1), MEAN, STD, torch.device("cpu"))
    _, masks = augmented(pairs, [0] * 16, seed=5)
    distinct = {tuple(np.flatnonzero(mask.numpy())[:20]) for mask in masks}
    assert len(distinct) > 12, "items of one batch shared a draw"
    again_images, again_masks = augmented(pairs, [0] * 16, seed=5)
    assert torch.equal(masks, again_masks)
    other_images, _ = augmented(pairs, [0] * 16, seed=6)
    assert not torch.equal(again_images, other_images)


@pytest.mark.slow
def test_training_with_device_augmentation_learns_and_resumes(data_root, tmp_path):
    options = dataclasses.replace(tiny_options(data_root, tmp_path, epochs=1), augment_on="device", device="cpu")
    train_in_a_fresh_process(options)
    train_in_a_fresh_process(dataclasses.replace(options, epochs=2))
    log = json.loads((tmp_path / "log.json").read_text())
    assert [row["epoch"] for row in log] == [1, 2] and log[1]["train_loss"] < log[0]["train_loss"]
    assert all(row["images_per_second"] > 0 for row in log)


# The training size: the optics' strengths are fractions of it, and JPEG's blocks tile it whole.
TRAINING_SIZE = 192


@pytest.fixture(scope="module")
def real_pairs(data_root) -> tuple[np.ndarray, np.ndarray]:
    """Eight real pairs at the training size, as DevicePairs holds them: four ISIC 2018, four HAM10000."""
    records = [record for name in ("isic2018", "ham10000") for record in discover_pairs(data_root / name)[:4]]
    return load_square_arrays(records, TRAINING_SIZE, "test pairs", show_progress=False)


def as_batch(pictures: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255


def as_pictures(images: torch.Tensor) -> np.ndarray:
    """N×3×S×S in [0, 1] -> N×S×S×3 in levels (0–255, not rounded)."""
    return images.permute(0, 2, 3, 1).numpy() * 255


# float32 carries 24 bits: a pixel coordinate near 192 is off by ~1e-5 of a pixel, so each interpolation or
# kernel weight by ~1e-5, and a sum of a few such weights over values up to 255 levels by ~0.01 of a level.
FLOAT_AGREEMENT_LEVELS = 0.01


def test_blur_is_opencvs_gaussian_with_each_items_own_sigma(real_pairs):
    pictures = real_pairs[0]
    # 0 (left as it is), then sigmas from the draw's range at 192 px: 0.002 (0.384) to 0.012 (2.304) of the side.
    sigmas = [0.0, 0.384, 0.7, 1.0, 1.5, 1.92, 2.1, 2.304]
    blurred = as_pictures(gaussian_blur(as_batch(pictures), torch.tensor(sigmas)))
    assert np.array_equal(blurred[0], pictures[0].astype(np.float32))
    for picture, sigma, ours in zip(pictures[1:], sigmas[1:], blurred[1:], strict=True):
        # OpenCV's own kernel size for an 8-bit picture, on the float picture so that neither side rounds.
        taps = round(6 * sigma + 1) | 1
        reference = cv2.GaussianBlur(picture.astype(np.float32), (taps, taps), sigma)
        assert np.abs(ours - reference).max() < FLOAT_AGREEMENT_LEVELS, sigma


def test_lower_resolution_is_rescale_with_each_items_own_side(real_pairs):
    pictures = real_pairs[0]
    # The full side (left as it is), then sides across the draw's 48–160, whole and fractional factors.
    sides = [192, 48, 57, 64, 100, 137, 150, 160]
    lowered = as_pictures(lower_resolution(as_batch(pictures), torch.tensor(sides, dtype=torch.float32)))
    assert np.array_equal(lowered[0], pictures[0].astype(np.float32))
    for picture, side, ours in zip(pictures[1:], sides[1:], lowered[1:], strict=True):
        # `rescale` itself, on the float picture: OpenCV's INTER_AREA and INTER_LINEAR without 8-bit rounding.
        reference = rescale(picture.astype(np.float32) / 255, side) * 255
        assert np.abs(ours - reference).max() < FLOAT_AGREEMENT_LEVELS, side


def peak_signal_to_noise(picture: np.ndarray, reference: np.ndarray) -> float:
    error = np.mean((picture.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / error))


def test_the_jpeg_model_loses_what_libjpeg_loses_at_each_items_own_quality(real_pairs):
    pictures = real_pairs[0]
    # The draw's lowest, the shift bed's 20, and the middle of the draw's 15–79, mixed in one batch.
    qualities = [15, 20, 35, 50, 50, 35, 20, 15]
    modelled = as_pictures(recompress_jpeg(as_batch(pictures), torch.tensor(qualities, dtype=torch.float32)))
    for picture, quality, ours in zip(pictures, qualities, modelled, strict=True):
        libjpeg = jpeg(picture, quality)
        ours_loss, libjpeg_loss = peak_signal_to_noise(ours, picture), peak_signal_to_noise(libjpeg, picture)
        # The same tables, subsampling and blocks lose the same: within 1 dB (26 % of the squared error), the
        # room left for libjpeg's integer DCT and 8-bit stages.
        assert abs(ours_loss - libjpeg_loss) < 1.0, quality
        # And the same errors, not just as many: two lossy codecs of equal loss but unrelated errors would differ
        # from each other 3 dB more than from the picture. Sharing libjpeg's quantisation decisions, the model
        # differs from it by at most half of what both lose (6 dB), where libjpeg's own rounding or a
        # coefficient rounded the other way at a tie moves a block.
        assert peak_signal_to_noise(ours, libjpeg) > libjpeg_loss + 6.0, quality


def test_the_zoom_frames_the_lesion_as_zoom_on_lesion_does(real_pairs):
    pictures, masks = real_pairs
    factors = [1.0, 1.1, 1.6, 2.2, 2.2, 1.6, 1.1, 1.0]
    mask_batch = torch.from_numpy(masks)[:, None].float()
    images, zoomed = resample(
        as_batch(pictures), mask_batch, zoom_matrices(mask_batch, torch.tensor(factors)), outside="border"
    )
    # A factor of 1 samples every pixel at its own centre: the picture back, but for float rounding.
    assert torch.equal(zoomed[0], mask_batch[0])
    assert np.abs(as_pictures(images[:1]) - pictures[:1]).max() < FLOAT_AGREEMENT_LEVELS
    for picture, mask, factor, ours in zip(
        pictures, masks, factors, zoomed[:, 0].numpy().astype(np.uint8), strict=True
    ):
        reference = zoom_on_lesion(picture, mask.astype(bool), factor)[1].astype(np.uint8)
        # zoom_on_lesion rounds its window to whole pixels (its centre up to 1 pixel off the mask's, its side
        # half a pixel) and cuts its mask by nearest neighbour, which reads up to half a pixel early: 1.75
        # pixels of the photo, `factor` pixels each on the screen, and one more for the cut at one half. So
        # each mask is within that reach of the other, except along the frame, where one window may take in
        # a line of the photo the other leaves out.
        reach = int(np.ceil(1.75 * factor + 1))
        near, inside = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8), (slice(reach, -reach),) * 2
        assert (ours <= cv2.dilate(reference, near))[inside].all(), factor
        assert (1 - ours <= cv2.dilate(1 - reference, near))[inside].all(), factor


def test_a_zoomed_mask_moves_with_its_image():
    images, masks = red_lesions_on_green_skin(8)
    mask_batch = torch.from_numpy(masks)[:, None].float()
    zoomed_images, zoomed_masks = resample(
        as_batch(images), mask_batch, zoom_matrices(mask_batch, torch.full((8,), 2.2)), outside="border"
    )
    assert zoomed_masks.mean() > 2 * mask_batch.mean()  # the lesion fills more of the frame
    looks_red = zoomed_images[:, 0] > zoomed_images[:, 1]
    agreement = (looks_red == (zoomed_masks[:, 0] == 1)).float().mean().item()
    # Image and mask are read at the same points with the same weights, and red over green means a lesion share
    # over one half in the mix, the mask's own cut: they agree everywhere but at a tie to float rounding.
    assert agreement > 0.999


def test_each_item_draws_its_own_optics_and_one_not_drawn_is_untouched(real_pairs):
    picture = as_batch(real_pairs[0][:1]).expand(64, -1, -1, -1).contiguous()
    degraded = degrade_optics(picture, torch.Generator().manual_seed(3))
    untouched = [torch.equal(item, picture[0]) for item in degraded]
    # Each item is left alone with probability 0.8 × 0.8 × 0.75 = 0.48: 31 of 64 expected, 4 standard
    # deviations either side allowed.
    assert 15 <= sum(untouched) <= 47
    changed = {item.numpy().tobytes() for item, alone in zip(degraded, untouched, strict=True) if not alone}
    # Continuous strengths rarely coincide; only JPEG's 65 whole qualities, alone, may repeat one.
    assert len(changed) > (64 - sum(untouched)) / 2, "items of one batch shared a draw"
    assert torch.equal(degraded, degrade_optics(picture, torch.Generator().manual_seed(3)))
    assert not torch.equal(degraded, degrade_optics(picture, torch.Generator().manual_seed(4)))

"""Whole batches augmented on the training device: each item its own draw, image and mask moved together,
the same draws for the same step. Run here on the CPU (the code is device-agnostic); on a GPU, by
benchmarks/gpu.py."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from tests.training.test_loop import tiny_options, train_in_a_fresh_process

from lesionseg.training.gpu_augmentation import DevicePairs

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

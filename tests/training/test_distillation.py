"""Distillation's soft targets on real pairs and the shipped model, and a real training run that learns from them."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from tests.training.test_gpu_augmentation import MEAN, STD, augmented, red_lesions_on_green_skin
from tests.training.test_loop import tiny_options, train_in_a_fresh_process

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.pairs import discover_pairs
from lesionseg.data.splits import Split
from lesionseg.evaluation.metrics import score_masks
from lesionseg.model.sidecar import file_sha256, read_sidecar
from lesionseg.training.data import AugmentedPairs, load_square_arrays
from lesionseg.training.distillation import (
    SOFT_TARGET_SCALE,
    cached_teacher_probabilities,
    soft_targets,
    teacher_probabilities,
)
from lesionseg.training.gpu_augmentation import DevicePairs
from lesionseg.training.options import TrainingOptions

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def held_out_pairs(data_root) -> tuple[np.ndarray, np.ndarray]:
    """Twelve HAM10000 pairs the shipped model never trained on, at its input size, as training holds them."""
    split = Split.of_model(read_sidecar(DEFAULT_WEIGHTS).training)
    records = split.select(discover_pairs(data_root / "ham10000"), "held-out")[:12]
    return load_square_arrays(records, 192, "test pairs", show_progress=False)


def test_the_shipped_model_as_teacher_outlines_the_lesions_experts_drew(held_out_pairs):
    images, masks = held_out_pairs
    probabilities = teacher_probabilities([DEFAULT_WEIGHTS], images, 8, CPU, show_progress=False)
    assert probabilities.shape == masks.shape and probabilities.dtype == np.float32
    assert 0.0 <= probabilities.min() and probabilities.max() <= 1.0
    # The shipped model scores Jaccard 0.89 on HAM10000's validation pairs; a teacher fed wrongly normalised,
    # flipped or transposed pictures scores near nothing, so half of that on twelve pairs separates the two.
    jaccards = [score_masks(p >= 0.5, m.astype(bool)).jaccard for p, m in zip(probabilities, masks, strict=True)]
    assert np.mean(jaccards) > 0.45


def test_two_teachers_give_the_mean_of_each_alone(held_out_pairs, tmp_path):
    images = held_out_pairs[0][:4]
    alone = teacher_probabilities([DEFAULT_WEIGHTS], images, 4, CPU, show_progress=False)
    twice = teacher_probabilities([DEFAULT_WEIGHTS, DEFAULT_WEIGHTS], images, 2, CPU, show_progress=False)
    # The same sums in another order and batching: float32's rounding, nothing more.
    np.testing.assert_allclose(twice, alone, atol=1e-5)


def test_soft_targets_blend_the_experts_mask_with_the_teachers():
    masks = np.array([[[0, 1, 1]]], np.uint8)
    probabilities = np.array([[[0.2, 0.4, 1.0]]], np.float32)
    assert soft_targets(masks, probabilities, 0.0).tolist() == [[[0, 255, 255]]]
    assert soft_targets(masks, probabilities, 1.0).tolist() == [[[51, 102, 255]]]
    assert soft_targets(masks, probabilities, 0.5).tolist() == [[[26, 178, 255]]]  # 25.5, 178.5 and 255, rounded


def test_the_cache_is_read_back_for_the_same_teachers_and_pictures_only(held_out_pairs, tmp_path):
    images = held_out_pairs[0][:4]
    cache = tmp_path / "teachers.npz"
    first = cached_teacher_probabilities([DEFAULT_WEIGHTS], images, cache, 4, CPU, is_main=True)
    fresh = teacher_probabilities([DEFAULT_WEIGHTS], images, 4, CPU, show_progress=False)
    np.testing.assert_allclose(first, fresh, atol=0.5 / SOFT_TARGET_SCALE + 1e-6)  # stored to the nearest level
    # What the cache holds is what comes back: overwrite it (same key) and it is read, not predicted again.
    with np.load(cache) as stored:
        key = str(stored["key"])
    np.savez(cache, key=key, probabilities=np.full(images.shape[:3], 7, np.uint8))
    assert np.all(cached_teacher_probabilities([DEFAULT_WEIGHTS], images, cache, 4, CPU, True) == 7 / 255)
    # Other pictures: predicted again, and the cache replaced.
    other = cached_teacher_probabilities([DEFAULT_WEIGHTS], images[::-1].copy(), cache, 4, CPU, True)
    np.testing.assert_allclose(other, first[::-1], atol=1e-6)


def test_soft_targets_stay_soft_through_either_augmentation():
    images, masks = red_lesions_on_green_skin(4)
    soft = soft_targets(masks, np.full(masks.shape, 0.3, np.float32), 0.5)  # 0.15 outside, 0.65 inside
    levels = {round(0.15 * 255) / 255, round(0.65 * 255) / 255}
    loader = AugmentedPairs(images, soft, MEAN, STD, augment=True, camera_shifts=True, mask_scale=SOFT_TARGET_SCALE)
    torch.manual_seed(0)
    for index in range(4):
        _, target = loader[index]
        # Moved by nearest neighbour, each value is one stored; the turn's border brings in 0.
        assert {round(float(value), 6) for value in target.unique()} <= {0.0} | {round(level, 6) for level in levels}
    on_device = DevicePairs(images, soft, MEAN, STD, CPU, camera_shifts=True, mask_scale=SOFT_TARGET_SCALE)
    _, targets = augmented(on_device, [0, 1, 2, 3] * 4, seed=3)
    # Bilinear, not cut at one half: values between the stored ones, none above the lesion's.
    assert targets.max().item() <= max(levels) + 1e-6
    assert ((targets > 0.16) & (targets < 0.64)).any(), "the soft target was cut to 0 or 1"
    # And a hard mask is still cut.
    _, hard = augmented(DevicePairs(images, masks, MEAN, STD, CPU), [0, 1, 2, 3], seed=3)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}


def test_a_teacher_weight_outside_0_to_1_or_a_missing_teacher_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--teacher-weight must be between 0 and 1"):
        TrainingOptions(output_directory=tmp_path, teacher_weight=1.5)
    with pytest.raises(ValueError, match=r"--teachers: no such file: .*absent.safetensors"):
        TrainingOptions(output_directory=tmp_path, teachers=(DEFAULT_WEIGHTS, tmp_path / "absent.safetensors"))


@pytest.mark.slow
def test_training_distils_the_teachers_and_a_resume_reads_their_cache(data_root, tmp_path):
    options = dataclasses.replace(
        tiny_options(data_root, tmp_path, epochs=1), teachers=(DEFAULT_WEIGHTS,), teacher_weight=0.5
    )
    best = train_in_a_fresh_process(options)
    cache = tmp_path / "teachers.npz"
    written = cache.stat().st_mtime_ns
    record = json.loads(best.with_suffix(".json").read_text())["training"]
    assert record["teachers"] == {
        "checkpoints": [{"path": str(DEFAULT_WEIGHTS), "sha256": file_sha256(DEFAULT_WEIGHTS)}],
        "teacher_weight": 0.5,
    }
    assert record["options"]["teachers"] == [str(DEFAULT_WEIGHTS)]
    train_in_a_fresh_process(dataclasses.replace(options, epochs=2))
    assert cache.stat().st_mtime_ns == written, "the resumed run predicted the teachers again"
    log = json.loads((tmp_path / "log.json").read_text())
    assert [row["epoch"] for row in log] == [1, 2] and log[1]["train_loss"] < log[0]["train_loss"]

"""Distillation: teacher checkpoints' mean probability blended into each training mask, as a soft target, so that
one model learns what an ensemble of them predicts (`lesionseg train --teachers A B C`)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lesionseg.imaging.preprocess import normalise
from lesionseg.model.checkpoint import load_checkpoint
from lesionseg.model.sidecar import config_from_sidecar, file_sha256

# Soft targets are stored as uint8 like the masks, 255 for certain lesion: 1/510 of rounding, far below any
# teacher's own error, and the arrays, the loader's pickles and the GPU's copy stay a quarter of float32's size.
SOFT_TARGET_SCALE = 255


@torch.no_grad()
def teacher_probabilities(
    weights_paths: list[Path], square_images: np.ndarray, batch_size: int, device: torch.device, show_progress: bool
) -> np.ndarray:
    """N×S×S float32: the teachers' mean probability of lesion on each square image, each teacher in eval mode
    (dropout off: its MC mean's centre) at its calibrated temperature. One view each, not the service's three
    flips: the teachers' disagreement is what an ensemble adds, and each view is a pass over every training
    pair (on two idle CPU cores, 10,578 pairs take a teacher about six minutes a view)."""
    total = np.zeros(square_images.shape[:3], dtype=np.float32)
    for weights_path in weights_paths:
        model, sidecar = load_checkpoint(weights_path)
        config = config_from_sidecar(sidecar)
        if config.input_size != square_images.shape[1]:
            raise ValueError(
                f"--teachers: {weights_path} takes {config.input_size} px, the model trained takes "
                f"{square_images.shape[1]}; a teacher must see what the student sees"
            )
        model.to(device)
        temperature = sidecar.calibration.temperature
        for start in tqdm(
            range(0, len(square_images), batch_size),
            desc=f"teacher {weights_path.name}",
            unit="batch",
            disable=not show_progress,
        ):
            batch = torch.from_numpy(normalise(square_images[start : start + batch_size], config.mean, config.std))
            batch = batch.to(device)
            total[start : start + batch_size] += torch.sigmoid(model(batch) / temperature)[:, 0].float().cpu().numpy()
    return total / len(weights_paths)


def soft_targets(masks: np.ndarray, probabilities: np.ndarray, teacher_weight: float) -> np.ndarray:
    """uint8 N×S×S on SOFT_TARGET_SCALE: (1 − w)·the expert's mask + w·the teachers' probability."""
    blended = (1.0 - teacher_weight) * masks.astype(np.float32) + teacher_weight * probabilities
    return np.rint(blended * SOFT_TARGET_SCALE).astype(np.uint8)


def teachers_record(weights_paths: list[Path], teacher_weight: float) -> dict:
    """What the soft targets came from, for the checkpoint's training record."""
    return {
        "checkpoints": [{"path": str(path), "sha256": file_sha256(path)} for path in weights_paths],
        "teacher_weight": teacher_weight,
    }


def cached_teacher_probabilities(
    weights_paths: list[Path],
    square_images: np.ndarray,
    cache_path: Path,
    batch_size: int,
    device: torch.device,
    is_main: bool,
) -> np.ndarray:
    """teacher_probabilities, kept beside the run's state so that a resumed run does not predict them again
    (on two CPU cores, six minutes a teacher). The cache is used only for the same teachers and images.
    Under torchrun every rank predicts them (each holds its own copy of the pairs); only the first writes."""
    key = json.dumps(
        {
            "teachers": [file_sha256(path) for path in weights_paths],
            # Every pixel, in order (a second or two for all the pairs): other or reordered pairs predict again.
            "images": hashlib.sha256(np.ascontiguousarray(square_images).data).hexdigest(),
        }
    )
    if cache_path.is_file():
        with np.load(cache_path) as cached:
            if str(cached["key"]) == key:
                return cached["probabilities"].astype(np.float32) / SOFT_TARGET_SCALE
    probabilities = teacher_probabilities(weights_paths, square_images, batch_size, device, is_main)
    stored = np.rint(probabilities * SOFT_TARGET_SCALE).astype(np.uint8)
    if is_main:
        np.savez(cache_path.with_suffix(".tmp.npz"), key=key, probabilities=stored)
        cache_path.with_suffix(".tmp.npz").replace(cache_path)  # atomic: a kill mid-write leaves no half cache
    return stored.astype(np.float32) / SOFT_TARGET_SCALE

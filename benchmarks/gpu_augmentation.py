"""What the batched augmentation costs a training step: `DevicePairs.batch` with and without the camera shifts,
and each camera step alone, at the GPU recipe's batch and size.

    .venv/bin/python benchmarks/gpu_augmentation.py [--device auto] [--batch 256] [--size 192] [--repeats 10]

On synthetic pairs (noise with a disc for a lesion: the cost does not depend on the content), on `--device`
(auto: CUDA where a GPU is visible, else the CPU), the device synchronised around each timing. Prints one
table: the median milliseconds a batch.
"""

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from lesionseg.devices import check_device_name, wants_cuda
from lesionseg.training.gpu_augmentation import (
    DevicePairs,
    gaussian_blur,
    lower_resolution,
    recompress_jpeg,
    shift_camera,
    zoom_on_lesions,
)


def synthetic_pairs(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    rows, columns = np.mgrid[:size, :size]
    disc = ((rows - size / 2) ** 2 + (columns - size / 2) ** 2 < (size / 4) ** 2).astype(np.uint8)
    return images, np.broadcast_to(disc, (count, size, size)).copy()


def chosen_device(name: str) -> torch.device:
    if not wants_cuda(name):
        return torch.device("cpu")
    return torch.device("cuda" if name == "auto" else name)


def finish(device: torch.device) -> None:
    """Waits for the work queued on a GPU, so that a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(function, device: torch.device, repeats: int) -> float:
    function()  # warm-up: kernels chosen, memory pooled
    timings = []
    for _ in range(repeats):
        finish(device)
        started = time.perf_counter()
        function()
        finish(device)
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", type=check_device_name)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=10)
    arguments = parser.parse_args()
    device = chosen_device(arguments.device)

    pictures, masks = synthetic_pairs(arguments.batch, arguments.size)
    mean = std = (0.5, 0.5, 0.5)
    with_camera = DevicePairs(pictures, masks, mean, std, device, camera_shifts=True)
    without_camera = DevicePairs(pictures, masks, mean, std, device, camera_shifts=False)
    indices = list(range(arguments.batch))
    generator = torch.Generator(device=device).manual_seed(0)
    images = with_camera.images.float() / 255
    float_masks = with_camera.masks.float()
    # Every item goes through each step whether its draw shifts it or not (an identity kernel or matrix, a JPEG
    # not picked), so the cost is the same at any strength; these are the strongest the draws give.
    sigmas = torch.full((arguments.batch,), 0.012 * arguments.size, device=device)
    sides = torch.full((arguments.batch,), 48.0, device=device)
    qualities = torch.full((arguments.batch,), 15.0, device=device)
    rows = [
        ("DevicePairs.batch, camera_shifts off", lambda: without_camera.batch(indices, generator)),
        ("DevicePairs.batch, camera_shifts on", lambda: with_camera.batch(indices, generator)),
        ("  zoom on the lesion", lambda: zoom_on_lesions(images, float_masks, generator)),
        ("  cast, exposure, vignette", lambda: shift_camera(images, generator)),
        ("  blur", lambda: gaussian_blur(images, sigmas)),
        ("  lower resolution", lambda: lower_resolution(images, sides)),
        ("  JPEG recompression", lambda: recompress_jpeg(images, qualities)),
    ]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"augmentation of a batch of {arguments.batch} pairs at {arguments.size} px on {device} ({name})")
    print(f"{'step':<40} {'ms a batch':>10}")
    for label, function in rows:
        print(f"{label:<40} {median_ms(function, device, arguments.repeats):>10}")


if __name__ == "__main__":
    sys.exit(main())

"""Where the PyTorch backend runs: `auto`, `cpu`, `cuda` or `cuda:N` (LESIONSEG_DEVICE, `--device`).

Torch-free on purpose: the lean install and the server's start-up read the setting and ask whether a GPU is
there without importing torch (300 MB of memory in every worker that never uses it). `auto` takes CUDA where
the NVIDIA driver lists a GPU this process may use; the PyTorch backend then confirms it with torch itself.
"""

import os
import re
from pathlib import Path

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_HELP = "auto (the default: CUDA where a GPU is visible, else the CPU), cpu, cuda or cuda:N (or LESIONSEG_DEVICE)"


def check_device_name(device: str) -> str:
    if not DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"LESIONSEG_DEVICE / --device: {device!r} is not auto, cpu, cuda or cuda:N")
    return device


def nvidia_gpu_visible() -> bool:
    """Whether the NVIDIA driver lists a GPU and CUDA_VISIBLE_DEVICES leaves this process one."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return gpus.is_dir() and any(gpus.iterdir())
    except OSError:
        return False


def wants_cuda(device: str) -> bool:
    """Whether `device` means the GPU here: asked for by name, or `auto` with one visible."""
    return device.startswith("cuda") or (device == "auto" and nvidia_gpu_visible())

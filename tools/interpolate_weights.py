"""Interpolates two checkpoints of one architecture in weight space: (1 − alpha)·first + alpha·second.

This is WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): a model fine-tuned
for robustness (here, with camera-like augmentation) and the model it started from lie in one basin, and points
between them often keep the start's accuracy on its own data while taking much of the fine-tune's robustness
under shift. It costs no training, only evaluation: pick alpha on the validation split, then measure on test.

    python tools/interpolate_weights.py src/lesionseg/weights/default.safetensors \\
        runs/camera_finetune/best.safetensors --alpha 0.5 --output runs/wise_0.5/best.safetensors

The output's sidecar takes the first checkpoint's calibration (so that evaluations compare like with like)
and records where it came from; its ONNX graphs are made by `lesionseg export-onnx --weights OUTPUT`.
"""

import argparse
from pathlib import Path

import torch

from lesionseg.model.checkpoint import load_checkpoint, save_checkpoint
from lesionseg.model.sidecar import config_from_sidecar, file_sha256


def interpolate(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], alpha: float) -> dict:
    """Floating tensors on the line between the two; integer ones (BatchNorm's step counts) from the first."""
    return {
        name: torch.lerp(tensor, second[name], alpha) if tensor.is_floating_point() else tensor
        for name, tensor in first.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="the starting model (alpha 0)")
    parser.add_argument("second", type=Path, help="the fine-tuned model (alpha 1)")
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--output", type=Path, required=True)
    arguments = parser.parse_args()
    first_model, first_sidecar = load_checkpoint(arguments.first)
    second_model, second_sidecar = load_checkpoint(arguments.second)
    if config_from_sidecar(first_sidecar) != config_from_sidecar(second_sidecar):
        parser.error("the two checkpoints are of different architectures")
    first_model.load_state_dict(interpolate(first_model.state_dict(), second_model.state_dict(), arguments.alpha))
    metadata = {
        "training": second_sidecar.training,
        "interpolation": {
            "method": "WiSE-FT weight-space interpolation",
            "alpha": arguments.alpha,
            "first": {"file": str(arguments.first), "sha256": file_sha256(arguments.first)},
            "second": {"file": str(arguments.second), "sha256": file_sha256(arguments.second)},
        },
    }
    if first_sidecar.entry("calibration"):
        metadata["calibration"] = first_sidecar.entry("calibration")
    save_checkpoint(first_model, config_from_sidecar(first_sidecar), arguments.output, metadata)
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()

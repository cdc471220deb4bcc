"""Checkpoints: weights as safetensors, everything about them in a JSON sidecar beside them.

Loading is strict: a missing or unexpected tensor, a shape mismatch or a sha256 that does not match
the sidecar is an error that names the problem, never a silently half-loaded model.
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lesionseg import __version__
from lesionseg.files import write_atomically
from lesionseg.model.config import ModelConfig
from lesionseg.model.factory import create_model
from lesionseg.model.network import SegmentationNetwork
from lesionseg.model.sidecar import (
    SIDECAR_FORMAT_VERSION,
    CheckpointError,
    Sidecar,
    config_from_sidecar,
    file_sha256,
    parse_sidecar,
    read_sidecar,
    sidecar_path,
)


def save_checkpoint(
    model: SegmentationNetwork,
    config: ModelConfig,
    weights_path: Path,
    metadata: dict[str, Any] | None = None,
    half_precision: bool = False,
) -> Sidecar:
    """Writes `weights_path` (safetensors) and its sidecar; returns the sidecar."""
    weights_path = Path(weights_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half_precision and tensor.is_floating_point():
            tensor = tensor.half()
        tensors[name] = tensor
    save_file(tensors, str(weights_path))
    sidecar = {
        "format_version": SIDECAR_FORMAT_VERSION,
        "lesionseg_version": __version__,
        "architecture": config.to_dict(),
        "input_size": [config.input_size, config.input_size],
        "normalisation": {"mean": list(config.mean), "std": list(config.std), "pixel_scale": "0-1 RGB"},
        "weights_dtype": "float16" if half_precision else "float32",
        **(metadata or {}),
        "sha256": file_sha256(weights_path),
    }
    checked = parse_sidecar(sidecar, sidecar_path(weights_path).name)  # never write one a load would refuse
    write_atomically(sidecar_path(weights_path), (json.dumps(sidecar, indent=2) + "\n").encode())
    return checked


PICKLE_SUFFIXES = {".pt", ".pth", ".bin"}


def read_tensors(weights_path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if weights_path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise CheckpointError(
                f"{weights_path.name}: pickle checkpoints can run code when loaded and are refused; convert it to"
                " .safetensors, or allow it explicitly (LESIONSEG_ALLOW_PICKLE_CHECKPOINTS=1)"
            )
        try:
            # weights_only: tensors and plain containers only, never arbitrary objects.
            tensors = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for unreadable or unsafe pickles
            raise CheckpointError(f"{weights_path.name} is not a plain state_dict: {error}") from error
        if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
            raise CheckpointError(f"{weights_path.name} is not a plain state_dict of tensors")
        return tensors
    if weights_path.suffix != ".safetensors":
        raise CheckpointError(f"{weights_path.name}: checkpoints are .safetensors files")
    try:
        return load_file(str(weights_path))
    except SafetensorError as error:
        raise CheckpointError(f"{weights_path.name} is not a readable safetensors file: {error}") from error


def mismatched_keys(
    expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong shape): the names by which `tensors` does not fit `expected`, sorted."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(name for name in set(expected) & set(tensors) if expected[name].shape != tensors[name].shape)
    return missing, unexpected, mismatched


def load_checkpoint(
    weights_path: Path, verify_sha256: bool = True, allow_pickle: bool = False
) -> tuple[SegmentationNetwork, Sidecar]:
    """Builds the sidecar's architecture and loads the weights into it, strictly, in float32."""
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint {weights_path} does not exist")
    sidecar = read_sidecar(weights_path)
    if verify_sha256 and file_sha256(weights_path) != sidecar.sha256:
        raise CheckpointError(
            f"{weights_path.name}: sha256 does not match its sidecar; the file was changed or damaged"
        )
    tensors = read_tensors(weights_path, allow_pickle)
    config = config_from_sidecar(sidecar)
    model = create_model(config)
    expected = model.state_dict()
    missing, unexpected, mismatched = mismatched_keys(expected, tensors)
    if missing or unexpected or mismatched:
        problems = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if names:
                problems.append(f"{len(names)} {label} (e.g. {', '.join(names[:3])})")
        raise CheckpointError(f"{weights_path.name} does not fit architecture {config.name!r}: " + "; ".join(problems))
    model.load_state_dict({name: tensor.to(expected[name].dtype) for name, tensor in tensors.items()}, strict=True)
    model.eval()
    return model, sidecar

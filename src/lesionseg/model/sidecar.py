"""A checkpoint's JSON sidecar: what the weights are, how they were made, their sha256. No torch."""

import hashlib
import json
from pathlib import Path
from typing import Any

from lesionseg.model.config import ModelConfig

SIDECAR_FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted or does not fit its architecture."""


def sidecar_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(weights_path: Path) -> dict[str, Any]:
    path = sidecar_path(weights_path)
    if not path.is_file():
        raise CheckpointError(f"no sidecar {path.name} beside {Path(weights_path).name}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"sidecar {path.name} is not valid JSON: {error}") from error


def update_sidecar(weights_path: Path, key: str, value: Any) -> None:
    """Sets one entry of the sidecar (calibration, evaluation, the ONNX export), keeping the rest."""
    path = sidecar_path(weights_path)
    sidecar = json.loads(path.read_text())
    sidecar[key] = value
    path.write_text(json.dumps(sidecar, indent=2) + "\n")


def config_from_sidecar(sidecar: dict[str, Any]) -> ModelConfig:
    architecture = dict(sidecar["architecture"])
    for key in ("out_indices", "mean", "std", "dropout_channels"):
        if key in architecture:
            architecture[key] = tuple(architecture[key])
    return ModelConfig(**architecture)

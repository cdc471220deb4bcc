"""A checkpoint's JSON sidecar: what the weights are, how they were made, their sha256; and where the files
it vouches for lie (the ONNX graphs, the int8 trunk), checked against it. No torch, no ONNX Runtime."""

import hashlib
import json
from pathlib import Path
from typing import Any

from lesionseg.files import write_atomically
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
    """Sets one entry of the sidecar (calibration, evaluation, the ONNX export), keeping the rest. Written
    to a temporary file and renamed over the old one: a crash, or a server reading it, sees the old sidecar
    or the new one, never half of one."""
    path = sidecar_path(weights_path)
    sidecar = json.loads(path.read_text())
    sidecar[key] = value
    write_atomically(path, (json.dumps(sidecar, indent=2) + "\n").encode())


def config_from_sidecar(sidecar: dict[str, Any]) -> ModelConfig:
    architecture = dict(sidecar["architecture"])
    for key in ("out_indices", "mean", "std", "dropout_channels"):
        if key in architecture:
            architecture[key] = tuple(architecture[key])
    return ModelConfig(**architecture)


# The trunk graph's last output: the pooled image descriptor the out-of-distribution gate reads.
DESCRIPTOR_OUTPUT = "descriptor"


def onnx_paths(weights_path: Path) -> tuple[Path, Path]:
    """Where `lesionseg export-onnx` puts the two graphs: beside the checkpoint."""
    stem = Path(weights_path).with_suffix("")
    return stem.with_name(stem.name + ".trunk.onnx"), stem.with_name(stem.name + ".tail.onnx")


def checked_onnx_paths(weights_path: Path, sidecar: dict) -> tuple[Path, Path]:
    """The two graphs, once they are known to be the ones the sidecar recorded, from these weights."""
    exported = sidecar.get("onnx")
    if not exported:
        raise CheckpointError(f"{Path(weights_path).name} has no ONNX export: run `lesionseg export-onnx` first")
    if exported.get("weights_sha256") != sidecar["sha256"]:
        raise CheckpointError(
            f"{Path(weights_path).name}: its ONNX graphs were exported from other weights (or before 0.3.0, "
            "which did not record them); run `lesionseg export-onnx` again"
        )
    paths = onnx_paths(weights_path)
    for path, part in zip(paths, ("trunk", "tail"), strict=True):
        if not path.is_file():
            raise CheckpointError(f"ONNX graph {path.name} is missing: run `lesionseg export-onnx`")
        if file_sha256(path) != exported[part]["sha256"]:
            raise CheckpointError(f"{path.name}: sha256 does not match the sidecar; export again")
    return paths


def int8_trunk_path(weights_path: Path) -> Path:
    """Where `lesionseg quantise` puts the static int8 trunk: beside the float graphs."""
    stem = Path(weights_path).with_suffix("")
    return stem.with_name(stem.name + ".trunk.int8.onnx")


def checked_int8_trunk_path(weights_path: Path, sidecar: dict) -> Path:
    """The int8 trunk, once it is known to be the one the sidecar recorded, quantised from the current float trunk."""
    quantised = sidecar.get("onnx_int8")
    if not quantised:
        raise CheckpointError(f"{Path(weights_path).name} has no int8 trunk: run `lesionseg quantise` first")
    if quantised.get("float_trunk_sha256") != sidecar["onnx"]["trunk"]["sha256"]:
        raise CheckpointError(
            f"{Path(weights_path).name}: its int8 trunk was quantised from another export; run `lesionseg quantise`"
        )
    path = int8_trunk_path(weights_path)
    if not path.is_file():
        raise CheckpointError(f"int8 graph {path.name} is missing: run `lesionseg quantise`")
    if file_sha256(path) != quantised["trunk"]["sha256"]:
        raise CheckpointError(f"{path.name}: sha256 does not match the sidecar; quantise again")
    return path


def graph_paths(weights_path: Path, sidecar: dict, int8_trunk: bool) -> tuple[Path, Path]:
    """(trunk, tail) to run: the float graphs, or the int8 trunk with the float tail."""
    trunk_path, tail_path = checked_onnx_paths(weights_path, sidecar)
    if int8_trunk:
        trunk_path = checked_int8_trunk_path(weights_path, sidecar)
    return trunk_path, tail_path


def has_descriptor(last_output: str, weights_path: Path, sidecar: dict) -> bool:
    """Whether the trunk graph gives the image descriptor; graphs exported before the out-of-distribution
    gate do not, and a sidecar that has a gate refuses them."""
    found = last_output == DESCRIPTOR_OUTPUT
    if sidecar.get("out_of_distribution") and not found:
        raise CheckpointError(
            f"{Path(weights_path).name}: the ONNX trunk predates the out-of-distribution gate; export again"
        )
    return found


def tail_repeats_trunk(sidecar: dict) -> bool:
    """Whether the exported tail graph wants each image's trunk repeated once per sample, as graphs exported
    by lesionseg 0.5.0 and earlier did; the backends repeat it for them, so that old exports still serve."""
    return not sidecar["onnx"].get("tail_takes_trunk_once", False)

"""ONNX Runtime inference on the exported trunk and tail graphs. No torch anywhere on this path."""

from pathlib import Path

import numpy as np
import onnxruntime

from lesionseg.model.sidecar import CheckpointError, file_sha256

DESCRIPTOR_OUTPUT = "descriptor"


def onnx_paths(weights_path: Path) -> tuple[Path, Path]:
    """Where `lesionseg export` puts the two graphs: beside the checkpoint."""
    stem = Path(weights_path).with_suffix("")
    return stem.with_name(stem.name + ".trunk.onnx"), stem.with_name(stem.name + ".tail.onnx")


def checked_onnx_paths(weights_path: Path, sidecar: dict) -> tuple[Path, Path]:
    """The two graphs, once they are known to be the ones the sidecar recorded, from these weights."""
    exported = sidecar.get("onnx")
    if not exported:
        raise CheckpointError(f"{Path(weights_path).name} has no ONNX export: run `lesionseg export` first")
    if exported.get("weights_sha256") != sidecar["sha256"]:
        raise CheckpointError(
            f"{Path(weights_path).name}: its ONNX graphs were exported from other weights (or before 0.3.0, "
            "which did not record them); run `lesionseg export` again"
        )
    paths = onnx_paths(weights_path)
    for path, part in zip(paths, ("trunk", "tail"), strict=True):
        if not path.is_file():
            raise CheckpointError(f"ONNX graph {path.name} is missing: run `lesionseg export`")
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


class OnnxBackend:
    """`int8_trunk` runs the static int8 trunk of `lesionseg quantise` (`--backend onnx-int8`)."""

    def __init__(self, weights_path: Path, sidecar: dict, threads: int = 0, int8_trunk: bool = False) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.sessions = [
            onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for path in graph_paths(weights_path, sidecar, int8_trunk)
        ]
        self.trunk_session, self.tail_session = self.sessions
        self.tail_inputs = [item.name for item in self.tail_session.get_inputs()]
        self.has_descriptor = has_descriptor(self.trunk_session.get_outputs()[-1].name, weights_path, sidecar)

    def trunk(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
        outputs = self.trunk_session.run(None, {"image": images})
        if self.has_descriptor:
            return outputs[:-1], outputs[-1]
        return outputs, None

    def tail(self, trunk: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
        feeds = dict(zip(self.tail_inputs, [*trunk, *masks], strict=True))
        return self.tail_session.run(None, feeds)[0]

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
    def __init__(self, weights_path: Path, sidecar: dict, threads: int = 0) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.sessions = [
            onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for path in checked_onnx_paths(weights_path, sidecar)
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

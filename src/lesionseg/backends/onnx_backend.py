"""ONNX Runtime inference on the exported trunk and tail graphs. No torch anywhere on this path."""

from pathlib import Path

import numpy as np
import onnxruntime

from lesionseg.model.sidecar import Sidecar, graph_paths, has_descriptor, tail_repeats_trunk
from lesionseg.uncertainty.sampling import repeat_trunk_for_old_graphs


def session_options(threads: int = 0) -> onnxruntime.SessionOptions:
    """Options for every ONNX Runtime session here. Idle threads do not spin: by default each session's threads
    spin for a while after a run, waiting for more work, and they took the cores from the other session (trunk,
    then tail) and from the NumPy work between runs. On 2 cores, spinning off made a 1024×768 prediction 1.7-2.4×
    as fast in process (docs/performance.md, "ONNX Runtime's threads no longer spin"); on many cores the cost is
    a wake-up per parallel step."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxBackend:
    """`int8_trunk` runs the static int8 trunk of `lesionseg quantise` (`--backend onnx-int8`)."""

    def __init__(self, weights_path: Path, sidecar: Sidecar, threads: int = 0, int8_trunk: bool = False) -> None:
        options = session_options(threads)
        self.sessions = [
            onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for path in graph_paths(weights_path, sidecar, int8_trunk)
        ]
        self.trunk_session, self.tail_session = self.sessions
        self.tail_inputs = [item.name for item in self.tail_session.get_inputs()]
        self.has_descriptor = has_descriptor(self.trunk_session.get_outputs()[-1].name, weights_path, sidecar)
        self.repeats_trunk = tail_repeats_trunk(sidecar)
        self.placement = {"device": "cpu", "precision": "int8 trunk, float32 tail" if int8_trunk else "float32"}

    def trunk(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
        outputs = self.trunk_session.run(None, {"image": images})
        if self.has_descriptor:
            return outputs[:-1], outputs[-1]
        return outputs, None

    def tail(self, trunk: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
        if self.repeats_trunk:
            trunk = repeat_trunk_for_old_graphs(trunk, masks)
        feeds = dict(zip(self.tail_inputs, [*trunk, *masks], strict=True))
        return self.tail_session.run(None, feeds)[0]

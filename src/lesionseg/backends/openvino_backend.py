"""OpenVINO inference on the same exported graphs as ONNX Runtime (`--backend openvino`, `pip install
'lesionseg[openvino]'`). No torch on this path.

OpenVINO runs a model in its CPU's fastest precision unless told otherwise: bfloat16 on processors with
bfloat16 units (recent Xeons), float32 elsewhere. `precision` chooses: "auto" (that default) or "f32". In
bfloat16 the trunk and tail ran 1.6× as fast as ONNX Runtime here; in float32, at the same speed (docs/performance.md).
"""

from pathlib import Path
from typing import Literal

import numpy as np
import openvino

from lesionseg.model.sidecar import Sidecar, graph_paths, has_descriptor, tail_repeats_trunk
from lesionseg.uncertainty.sampling import repeat_trunk_for_old_graphs

Precision = Literal["auto", "f32"]


class OpenVinoBackend:
    def __init__(
        self,
        weights_path: Path,
        sidecar: Sidecar,
        threads: int = 0,
        precision: Precision = "auto",
        int8_trunk: bool = False,
    ) -> None:
        core = openvino.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if precision == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        # OpenVINO runs the int8 trunk's quantised convolutions in int8, the rest in `precision`.
        trunk_path, tail_path = graph_paths(weights_path, sidecar, int8_trunk)
        self.trunk_model = core.compile_model(core.read_model(trunk_path), "CPU", config)
        self.tail_model = core.compile_model(core.read_model(tail_path), "CPU", config)
        self.precision = self.trunk_model.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        trunk_precision = "int8 trunk, " if int8_trunk else ""
        self.placement = {"device": "cpu", "precision": f"{trunk_precision}{self.precision}"}
        self.has_descriptor = has_descriptor(self.trunk_model.outputs[-1].get_any_name(), weights_path, sidecar)
        self.repeats_trunk = tail_repeats_trunk(sidecar)

    def trunk(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
        # A compiled model is not safe to run from two threads at once; each call gets its own request.
        results = self.trunk_model.create_infer_request().infer([images])
        outputs = [np.asarray(results[output]) for output in self.trunk_model.outputs]
        if self.has_descriptor:
            return outputs[:-1], outputs[-1]
        return outputs, None

    def tail(self, trunk: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
        if self.repeats_trunk:
            trunk = repeat_trunk_for_old_graphs(trunk, masks)
        results = self.tail_model.create_infer_request().infer([*trunk, *masks])
        return np.asarray(results[self.tail_model.outputs[0]])

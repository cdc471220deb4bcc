"""Static int8 quantisation of the exported ONNX trunk, calibrated on training images (`lesionseg quantise`).

ONNX Runtime's `quantize_static` writes a QDQ graph: int8 weights per output channel, and uint8 activations
whose ranges were measured on real images preprocessed exactly as the predictor does.

The weights have 7 bits (`reduce_range`). x86 CPUs without VNNI multiply uint8 by int8 with VPMADDUBSW, which
adds two products into a signed 16-bit lane and saturates when both are large (2 × 255 × 128 > 32767): the
same graph then gives other masks on AVX2 than on AVX-512 VNNI. With 7-bit weights the sum stays below it
(2 × 255 × 64 = 32640), so the answer is the CPU's integer arithmetic on every x86 CPU, and the fast U8S8
kernels run on all of them. (0.5.0's uint8 weights, U8U8, also never saturate, but ONNX Runtime's U8U8
kernels ran the trunk 4.4 to 5.5 times slower than float32 on an AVX2 CPU.)

Two kinds of convolution stay float32, where 7 bits cost accuracy and int8 gains little speed: the depthwise
ones (one small filter per channel, bound by memory) and the stem (three input channels). Quantising them too
lost 0.0097 (ISIC) and 0.0067 (HAM10000) validation Jaccard; keeping them float32 loses 0.0002 and 0.0008.
Only training images calibrate it, so the held-out pairs that score it stay unseen. The tail stays float32:
one 1×1 convolution and a resize, too little work to gain from int8.
"""

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from lesionseg.data.pairs import read_image
from lesionseg.data.splits import Split, select_pairs
from lesionseg.imaging.preprocess import model_input
from lesionseg.model.sidecar import (
    Sidecar,
    checked_onnx_paths,
    config_from_sidecar,
    file_sha256,
    int8_trunk_path,
    read_sidecar,
    update_sidecar,
)

DEFAULT_IMAGES_PER_SET = 80


class CalibrationImages(CalibrationDataReader):
    """Feeds the calibration one preprocessed image at a time, decoding each only when asked."""

    def __init__(self, image_paths: list[Path], sidecar: Sidecar) -> None:
        self.image_paths = iter(image_paths)
        self.config = config_from_sidecar(sidecar)

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self.image_paths, None)
        if path is None:
            return None
        return {"image": model_input(read_image(path), self.config.input_size, self.config.mean, self.config.std)}


def calibration_image_paths(
    data_root: Path, sets: list[str], images_per_set: int, seed: int, sidecar: Sidecar
) -> list[Path]:
    """A random draw of each set's training split, the same for the same seed."""
    generator = np.random.default_rng(seed)
    split = Split.of_model(sidecar.training)
    paths = []
    for set_name in sets:
        training = select_pairs(data_root, set_name, "training", split)
        chosen = generator.choice(len(training), min(images_per_set, len(training)), replace=False)
        paths += [training[index].image_path for index in sorted(chosen)]
    if not paths:
        raise ValueError(f"no training images under {data_root} for {', '.join(sets)}")
    return paths


def float_convolutions(graph_path: Path) -> list[str]:
    """The names of the convolutions kept in float32: the depthwise ones (group > 1) and the stem (the one fed
    the image itself)."""
    graph = onnx.load(str(graph_path), load_external_data=False).graph
    image_inputs = {value.name for value in graph.input}
    return [
        node.name
        for node in graph.node
        if node.op_type == "Conv"
        and (any(a.name == "group" and a.i > 1 for a in node.attribute) or node.input[0] in image_inputs)
    ]


def quantise_trunk(
    weights_path: Path,
    data_root: Path,
    sets: list[str],
    images_per_set: int = DEFAULT_IMAGES_PER_SET,
    seed: int = 0,
    output_path: Path | None = None,
) -> dict:
    """Writes WEIGHTS.trunk.int8.onnx beside the float graphs (or at `output_path`, leaving the sidecar
    alone) and records its sha256 in the sidecar under "onnx_int8"."""
    sidecar = read_sidecar(weights_path)
    trunk_path, _ = checked_onnx_paths(weights_path, sidecar)
    image_paths = calibration_image_paths(data_root, sets, images_per_set, seed, sidecar)
    destination = Path(output_path or int8_trunk_path(weights_path))
    with tempfile.TemporaryDirectory() as workspace:
        # Shape inference and constant folding first, as ONNX Runtime recommends before quantising.
        prepared = Path(workspace) / "trunk.prepared.onnx"
        quant_pre_process(str(trunk_path), str(prepared))
        quantize_static(
            str(prepared),
            str(destination),
            CalibrationImages(image_paths, sidecar),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=float_convolutions(prepared),
        )
    record = {
        "trunk": {"file": destination.name, "sha256": file_sha256(destination)},
        # The int8 graph belongs to this float graph: a new export makes it stale.
        "float_trunk_sha256": sidecar.onnx.trunk.sha256,
        "onnxruntime_version": onnxruntime.__version__,
        "calibration": {
            "method": "MinMax, QDQ, 7-bit int8 weights per channel and uint8 activations (U8S8, reduce_range); "
            "depthwise convolutions and the stem in float32",
            "images": len(image_paths),
            "split": "training",
            "sets": list(sets),
            "seed": seed,
        },
    }
    if output_path is None:
        update_sidecar(weights_path, "onnx_int8", record)
    return record

"""Should the ONNX trunk ship in int8? Dynamic quantisation against float32: speed and ISIC Jaccard.

    python benchmarks/int8_quantisation.py

Quantises the embedded trunk graph with ONNX Runtime's dynamic quantisation (weights int8), then
times both trunks on one 192-px image and scores both on the ISIC validation split exactly as
`lesionseg evaluate` does (10 samples, seed 0). The rule: keep int8 only if Jaccard drops by less
than 0.005. Prints a table and writes benchmarks/results/int8_quantisation.json.
"""

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

from lesionseg.backends.onnx_backend import OnnxBackend
from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.splits import Split, select_pairs
from lesionseg.evaluation.evaluate import evaluate_pairs
from lesionseg.model.sidecar import onnx_paths, read_sidecar
from lesionseg.predictor import Predictor

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "benchmarks" / "results" / "int8_quantisation.json"
DATA_ROOT = REPOSITORY.parent / "shared" / "data"


def trunk_milliseconds(backend: OnnxBackend, repeats: int = 20) -> float:
    image = np.random.default_rng(0).standard_normal((1, 3, 192, 192)).astype(np.float32)
    for _ in range(3):
        backend.trunk(image)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        backend.trunk(image)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> None:
    sidecar = read_sidecar(DEFAULT_WEIGHTS)
    trunk_path, _ = onnx_paths(DEFAULT_WEIGHTS)
    float32 = OnnxBackend(DEFAULT_WEIGHTS, sidecar)
    int8 = OnnxBackend(DEFAULT_WEIGHTS, sidecar)
    with tempfile.TemporaryDirectory() as workspace:
        prepared, quantised = Path(workspace) / "trunk.prepared.onnx", Path(workspace) / "trunk.int8.onnx"
        quant_pre_process(str(trunk_path), str(prepared))
        quantize_dynamic(str(prepared), str(quantised), weight_type=QuantType.QInt8)
        int8.trunk_session = onnxruntime.InferenceSession(str(quantised), providers=["CPUExecutionProvider"])
        sizes = {"float32": trunk_path.stat().st_size / 1e6, "int8": quantised.stat().st_size / 1e6}
    records = select_pairs(DATA_ROOT, "isic2018", "held-out", Split())
    rows = {}
    for name, backend in (("float32", float32), ("int8", int8)):
        metrics, _ = evaluate_pairs(Predictor(backend, sidecar), records, samples=10, seed=0)
        rows[name] = {
            "trunk_mb": round(sizes[name], 1),
            "trunk_ms": round(trunk_milliseconds(backend), 1),
            "jaccard": round(metrics["jaccard"], 4),
            "thresholded_jaccard": round(metrics["thresholded_jaccard"], 4),
        }
    drop = rows["float32"]["jaccard"] - rows["int8"]["jaccard"]
    keep = drop < 0.005 and rows["int8"]["trunk_ms"] < rows["float32"]["trunk_ms"]
    print(f"ISIC validation, {len(records)} pairs\n")
    print("| trunk | MB | trunk ms | Jaccard | thresholded Jaccard |\n|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['trunk_mb']} | {row['trunk_ms']} | {row['jaccard']} | {row['thresholded_jaccard']} |")
    print(f"\nJaccard drop {drop:.4f} (limit 0.005); {'keep' if keep else 'do not ship'} int8")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "jaccard_drop": drop, "keep_int8": keep}, indent=2) + "\n")


if __name__ == "__main__":
    main()

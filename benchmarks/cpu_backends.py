"""Which CPU backend: ONNX Runtime (the lean install's default), OpenVINO in its CPU's fastest precision
(bfloat16 where the processor has it) and OpenVINO in float32, on the same exported graphs; and both
engines on the static int8 trunk that `lesionseg quantise` wrote beside them (calibrated on training images).

    python benchmarks/cpu_backends.py [--pairs N]

Times the inference (trunk + 10-sample tail on one image, at the model's resolution, median of 40), each
backend alone in its own process as a server would run it, three times in turn (in one process their
thread pools slow one another down) and scores each backend exactly as `lesionseg evaluate` does (10 samples, seed 0)
on the ISIC held-out pairs (validation and test) and the HAM10000 test split. The rule from the issue: ship
a backend that is ≥ 1.3× as fast as ONNX Runtime with ≤ 0.005 Jaccard lost on each set. Prints a table and writes
benchmarks/results/cpu_backends.json.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.splits import Split, select_pairs
from lesionseg.evaluation.evaluate import evaluate_pairs
from lesionseg.model.sidecar import read_sidecar
from lesionseg.predictor import Predictor
from lesionseg.uncertainty.sampling import sample_tail

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "benchmarks" / "results" / "cpu_backends.json"
DATA_ROOT = REPOSITORY.parent / "shared" / "data"
BACKENDS = ("onnx", "onnx-int8", "openvino", "openvino-f32", "openvino-int8")
SETS = (("isic2018", "held-out"), ("ham10000", "test"))


def inference_milliseconds(predictors: dict[str, Predictor], rounds: int = 8, calls: int = 5) -> dict[str, float]:
    image = np.random.default_rng(0).standard_normal((1, 3, 192, 192)).astype(np.float32)

    def infer(predictor: Predictor) -> None:
        levels, _ = predictor.backend.trunk(image)
        sample_tail(predictor.backend, predictor.config, levels, 10, 0)

    timings = {name: [] for name in predictors}
    # Rounds of a few calls each, backends taking turns: a noisy moment on this shared machine hits every
    # backend, and each block starts with an untimed call, so threads another backend left spinning
    # (ONNX Runtime's wait for more work) have stopped before timing starts.
    for _ in range(rounds):
        for name, predictor in predictors.items():
            infer(predictor)
            for _ in range(calls):
                started = time.perf_counter()
                infer(predictor)
                timings[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in timings.items()}


def milliseconds_alone(rounds: int = 3) -> dict[str, float]:
    """Each backend timed in a fresh process of its own, the backends taking turns `rounds` times."""
    timings = {name: [] for name in BACKENDS}
    for _ in range(rounds):
        for name in BACKENDS:
            command = [sys.executable, __file__, "--time-only", name]
            timings[name].append(float(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=0, help="score only the first N pairs of each set")
    parser.add_argument("--time-only", choices=BACKENDS, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.time_only:
        predictor = Predictor.from_checkpoint(DEFAULT_WEIGHTS, arguments.time_only)
        print(inference_milliseconds({arguments.time_only: predictor})[arguments.time_only])
        return
    milliseconds = milliseconds_alone()
    predictors = {name: Predictor.from_checkpoint(DEFAULT_WEIGHTS, name) for name in BACKENDS}
    precision = {name: getattr(p.backend, "precision", "f32") for name, p in predictors.items()}
    # The int8 rows run a QDQ trunk: its convolutions in int8, everything else in the engine's precision.
    precision = {name: f"int8 + {value}" if name.endswith("-int8") else value for name, value in precision.items()}
    rows = {name: {"precision": precision[name], "inference_ms": round(milliseconds[name], 1)} for name in BACKENDS}
    for set_name, split in SETS:
        records = select_pairs(DATA_ROOT, set_name, split, Split.of_model(read_sidecar(DEFAULT_WEIGHTS).training))
        records = records[: arguments.pairs] if arguments.pairs else records
        for name, predictor in predictors.items():
            metrics, _ = evaluate_pairs(predictor, records, samples=10, seed=0)
            rows[name][f"{set_name}_jaccard"] = round(metrics["jaccard"], 4)
            rows[name][f"{set_name}_pairs"] = len(records)
    reference = rows["onnx"]
    print("| backend | precision | inference ms (T=10) | speed-up | ISIC Jaccard | HAM10000 Jaccard | ships? |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name, row in rows.items():
        row["speed_up"] = round(reference["inference_ms"] / row["inference_ms"], 2)
        losses = [reference[f"{set_name}_jaccard"] - row[f"{set_name}_jaccard"] for set_name, _ in SETS]
        row["ships"] = name == "onnx" or (row["speed_up"] >= 1.3 and max(losses) <= 0.005)
        print(
            f"| {name} | {row['precision']} | {row['inference_ms']} | {row['speed_up']}× "
            f"| {row['isic2018_jaccard']} | {row['ham10000_jaccard']} | {'yes' if row['ships'] else 'no'} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"pairs": {s: reference[f"{s}_pairs"] for s, _ in SETS}, "rows": rows}, indent=2))
    print(f"\nwritten: {RESULTS.relative_to(REPOSITORY)}")


if __name__ == "__main__":
    main()

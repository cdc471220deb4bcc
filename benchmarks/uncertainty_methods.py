"""What each uncertainty method costs per image: MC dropout alone against MC dropout with flip
test-time augmentation, and the out-of-distribution gate's share, measured in one run as ratios.

    .venv/bin/python benchmarks/uncertainty_methods.py [--repeats 30]

In process on the embedded model (PyTorch and ONNX Runtime), a 1024×768 dermoscopy photo, 10 samples.
The quality of each method comes from `lesionseg evaluate --split report --uncertainty [--tta]`.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPOSITORY), str(REPOSITORY / "benchmarks")]
from serving import jpeg_bytes, source_image  # noqa: E402

from lesionseg.config import DEFAULT_WEIGHTS  # noqa: E402
from lesionseg.imaging.decode import decode_upload  # noqa: E402
from lesionseg.predictor import Predictor  # noqa: E402


def median_ms(function, repeats: int) -> float:
    function()  # warm-up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def measure(backend: str, rgb, repeats: int) -> str:
    predictor = Predictor.from_checkpoint(DEFAULT_WEIGHTS, backend)
    plain = median_ms(lambda: predictor.predict(rgb, samples=10, seed=0), repeats)
    flipped = median_ms(lambda: predictor.predict(rgb, samples=10, seed=0, tta=True), repeats)
    descriptor = predictor.backend.trunk(predictor.model_input(rgb))[1]
    gate = median_ms(lambda: predictor.gate.scores(descriptor), repeats * 10)
    return f"| {backend} | {plain:.1f} | {flipped:.1f} | {flipped / plain:.2f}× | {gate:.3f} | {gate / plain:.2%} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    arguments = parser.parse_args()
    rgb = decode_upload(jpeg_bytes(source_image(), 1024, 768), 64_000_000, 16, 384).rgb
    print("| backend | MC dropout (ms) | MC + flip TTA (ms) | TTA / MC | gate (ms) | gate / MC |")
    print("|---|---:|---:|---:|---:|---:|")
    for backend in ("pytorch", "onnx"):
        print(measure(backend, rgb, arguments.repeats))


if __name__ == "__main__":
    main()

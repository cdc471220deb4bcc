"""Peak working memory of one request at the 64-megapixel limit, for each output format, each in a fresh
process: what api/memory_budget.py's estimates come from.

    .venv/bin/python benchmarks/memory.py [--side 8000] [--backend onnx]

The image is the cheapest attack on memory: a GIF of a few bytes whose header claims an 8000×8000 screen.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.hostile_files import canvas_gif  # noqa: E402

MEASURE = """
import io, json, sys
from pathlib import Path

from PIL import Image

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

from lesionseg.api.memory_budget import MemoryBudget
from lesionseg.api.routes.predict import ResponseFormat, predict_and_render
from lesionseg.config import DEFAULT_WEIGHTS, Settings
from lesionseg.predictor import Predictor
from lesionseg.segmenter import PredictionRequest, Segmenter

backend, output, data = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
predictor = Predictor.from_checkpoint(DEFAULT_WEIGHTS, backend)
segmenter, budget = Segmenter(predictor, Settings()), MemoryBudget(1 << 40)
small = io.BytesIO()
Image.new("RGB", (256, 256), (180, 140, 120)).save(small, format="PNG")
warm_up = PredictionRequest(samples=2, seed=0)
predict_and_render(small.getvalue(), segmenter, warm_up, ResponseFormat("json"), budget)
before = status("VmRSS")
format, include_images = ("json", True) if output == "json_with_images" else (output, False)
request, response = PredictionRequest(samples=10, seed=0), ResponseFormat(format, include_images=include_images)
predict_and_render(data, segmenter, request, response, budget)
print(json.dumps({"before": before, "peak": status("VmHWM"), "after": status("VmRSS")}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--backend", default="onnx")
    arguments = parser.parse_args()
    data = canvas_gif(arguments.side)
    pixels = arguments.side**2
    print(f"| output | extra peak at {pixels / 1e6:.0f} MP (MB) | bytes per pixel | held afterwards (MB) |")
    print("|---|---:|---:|---:|")
    for output in ("mask", "json", "uncertainty", "overlay", "png", "json_with_images"):
        completed = subprocess.run(
            [sys.executable, "-c", MEASURE, arguments.backend, output, data.hex()],
            capture_output=True,
            text=True,
            check=True,
        )
        memory = json.loads(completed.stdout.strip().splitlines()[-1])
        extra = memory["peak"] - memory["before"]
        held = memory["after"] - memory["before"]
        print(f"| {output} | {extra:.0f} | {extra * 1024 * 1024 / pixels:.1f} | {held:.0f} |")


if __name__ == "__main__":
    main()

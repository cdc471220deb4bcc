"""Peak working memory of one request at the 64-megapixel limit, for each output format and three kinds of
image, each request in a fresh process: what api/memory_budget.py's estimates come from (the worst kind, per
output, rounded up).

    .venv/bin/python benchmarks/memory.py [--side 8000] [--backend onnx] [--kinds gif png jpeg webp]

The kinds:
- `gif`: the cheapest attack, 35 bytes whose header claims an 8000×8000 screen, one byte a pixel decoded;
- `png`: a flat RGB PNG of a few hundred KB, which libvips reads a band of rows at a time;
- `jpeg`: a photo, smooth colour fields with grain, decoded at reduced scale unless the output shows it,
  and then read by libvips a band at a time;
- `webp`: a flat lossless WebP, which libvips reads as libwebp decodes it: whole, but only when shown;
- `turned-png`, `turned-jpeg`, `turned-webp`: the same, turned by EXIF, so that a photo shown is decoded
  whole by libvips to be turned (its model copy is still made by bands, and turned once small);
- `float-tiff`: a flat 32-bit float TIFF, read by bands too, after a reading of its own for its peak: its
  conversion to 8 bits depends on the whole picture's range.
"""

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.hostile_files import canvas_gif, flat_webp  # noqa: E402

MEASURE = """
import io, json, sys
from pathlib import Path

from PIL import Image

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

from lesionseg.api.memory_budget import MemoryBudget, configure_malloc
from lesionseg.api.routes.predict import ResponseFormat, predict_and_render
from lesionseg.config import DEFAULT_WEIGHTS, Settings
from lesionseg.predictor import Predictor
from lesionseg.segmenter import PredictionRequest, Segmenter

backend, output, data = sys.argv[1], sys.argv[2], sys.stdin.buffer.read()
configure_malloc()  # as the service does
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


def photo(side: int) -> np.ndarray:
    """Smooth colour fields with fine grain, as a dermoscopic photo is."""
    generator = np.random.default_rng(0)
    coarse = generator.integers(60, 220, (side // 250, side // 250, 3), dtype=np.uint8)
    picture = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
    picture += generator.integers(0, 8, picture.shape, dtype=np.uint8)
    return picture


def encoded(picture: np.ndarray, format: str, **options) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(picture).save(stream, format=format, **options)
    return stream.getvalue()


def flat(side: int) -> np.ndarray:
    return np.full((side, side, 3), (180, 140, 120), np.uint8)


def turned() -> Image.Exif:
    """EXIF orientation 6: the picture is shown turned, which needs it whole."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


IMAGES = {
    "gif": canvas_gif,
    "png": lambda side: encoded(flat(side), "PNG", compress_level=9),
    "jpeg": lambda side: encoded(photo(side), "JPEG", quality=85),
    "webp": flat_webp,
    "turned-png": lambda side: encoded(flat(side), "PNG", compress_level=9, exif=turned()),
    "turned-jpeg": lambda side: encoded(photo(side), "JPEG", quality=85, exif=turned()),
    "turned-webp": lambda side: flat_webp(side, orientation=6),
    "float-tiff": lambda side: encoded(
        np.full((side, side), 1000.0, np.float32), "TIFF", compression="tiff_adobe_deflate"
    ),
}
OUTPUTS = ("mask", "json", "uncertainty", "overlay", "png", "json_with_images")


def extra_peak_megabytes(backend: str, output: str, data: bytes) -> float:
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE, backend, output], input=data, capture_output=True, check=True
    )
    memory = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    return memory["peak"] - memory["before"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--kinds", nargs="+", choices=IMAGES, default=list(IMAGES))
    arguments = parser.parse_args()
    images = {kind: IMAGES[kind](arguments.side) for kind in arguments.kinds}
    pixels = arguments.side**2
    sizes = ", ".join(f"{kind} {len(data) / 1e6:.2f} MB" for kind, data in images.items())
    print(f"Extra peak memory of one request at {pixels / 1e6:.0f} MP, in MB ({arguments.backend}; {sizes})")
    print("| output | " + " | ".join(images) + " | worst, bytes per pixel |")
    print("|---|" + "---:|" * (len(images) + 1))
    for output in OUTPUTS:
        peaks = [extra_peak_megabytes(arguments.backend, output, data) for data in images.values()]
        worst = max(peaks) * 1024 * 1024 / pixels
        print(f"| {output} | " + " | ".join(f"{peak:.0f}" for peak in peaks) + f" | {worst:.1f} |")


if __name__ == "__main__":
    main()

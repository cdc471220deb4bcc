"""Latency of POST /predict/ on the embedded model, and the cheap MC path against the seed's.

Run: `make benchmark` (or `.venv/bin/python benchmarks/predict_latency.py`). Prints a table and
writes benchmarks/results/predict_latency.json. Compare rows as ratios: they share one run.
"""

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import torch

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.imaging.preprocess import normalise, resize_to_square
from lesionseg.predictor import Predictor
from lesionseg.uncertainty import sample_full_passes, sample_mc_dropout

REPOSITORY = Path(__file__).resolve().parents[1]
DATA_ROOT = REPOSITORY.parent / "shared" / "data"
RESULTS = REPOSITORY / "benchmarks" / "results" / "predict_latency.json"


def source_image() -> np.ndarray:
    """A real dermoscopy photo where the shared data is present; otherwise a smooth synthetic disc."""
    photos = sorted((DATA_ROOT / "unlabeled" / "isic-original-size").glob("*.jpg"))
    if photos:
        return cv2.imread(str(photos[0]))
    image = np.full((768, 1024, 3), (170, 140, 200), np.uint8)
    cv2.circle(image, (512, 384), 200, (60, 40, 90), -1)
    return cv2.GaussianBlur(image, (51, 51), 0)


def jpeg_bytes(image: np.ndarray, width: int, height: int) -> bytes:
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def percentile(values: list[float], fraction: float) -> float:
    return float(np.percentile(values, fraction * 100))


def start_server(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "lesionseg.cli", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def time_requests(client: httpx.Client, data: bytes, samples: int, repeats: int, warmup: int) -> list[float]:
    timings = []
    for index in range(warmup + repeats):
        started = time.perf_counter()
        response = client.post(
            "/predict/",
            files={"file": ("x.jpg", io.BytesIO(data), "image/jpeg")},
            params={"samples": samples, "seed": 0},
        )
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        if index >= warmup:
            timings.append(elapsed * 1000)
    return timings


def time_sampling(repeats: int) -> list[dict]:
    """In-process: the seed's T full passes against trunk-once + batched tail, same model, same masks."""
    predictor = Predictor.from_checkpoint(DEFAULT_WEIGHTS)
    square = resize_to_square(cv2.cvtColor(source_image(), cv2.COLOR_BGR2RGB), predictor.input_size)
    batch = normalise(torch.from_numpy(square)[None], predictor.config.mean, predictor.config.std)
    rows = []
    for samples in (1, 10, 30, 64):
        for method, function in (("batched tail", sample_mc_dropout), ("full passes (seed)", sample_full_passes)):
            function(predictor.model, batch, samples, 0)
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                function(predictor.model, batch, samples, 0)
                timings.append((time.perf_counter() - started) * 1000)
            rows.append({"method": method, "samples": samples, "median_ms": statistics.median(timings)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--port", type=int, default=8765)
    arguments = parser.parse_args()

    image = source_image()
    sizes = [(1024, 768), (4000, 3000)]
    server = start_server(arguments.port)
    http_rows = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{arguments.port}", timeout=300) as client:
            for width, height in sizes:
                data = jpeg_bytes(image, width, height)
                for samples in (1, 10, 30, 64):
                    timings = time_requests(client, data, samples, arguments.repeats, arguments.warmup)
                    http_rows.append(
                        {
                            "image": f"{width}x{height}",
                            "samples": samples,
                            "median_ms": statistics.median(timings),
                            "p95_ms": percentile(timings, 0.95),
                        }
                    )
    finally:
        server.terminate()
        server.wait(timeout=30)
    sampling_rows = time_sampling(arguments.repeats)

    print("POST /predict/ latency (embedded model, one client)")
    print(f"{'image':>10} {'samples':>8} {'median ms':>10} {'p95 ms':>8} {'× samples=1':>12}")
    for row in http_rows:
        base = next(r for r in http_rows if r["image"] == row["image"] and r["samples"] == 1)["median_ms"]
        print(
            f"{row['image']:>10} {row['samples']:>8} {row['median_ms']:>10.1f} {row['p95_ms']:>8.1f}"
            f" {row['median_ms'] / base:>12.2f}"
        )
    print()
    print("MC sampling at model resolution, in process")
    print(f"{'method':>20} {'samples':>8} {'median ms':>10} {'seed / batched':>15}")
    for row in sampling_rows:
        batched = next(r for r in sampling_rows if r["method"] == "batched tail" and r["samples"] == row["samples"])
        print(
            f"{row['method']:>20} {row['samples']:>8} {row['median_ms']:>10.1f}"
            f" {row['median_ms'] / batched['median_ms']:>15.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"http": http_rows, "sampling": sampling_rows, "torch_threads": torch.get_num_threads()}, indent=2)
        + "\n"
    )
    print(f"\nwritten: {RESULTS.relative_to(REPOSITORY)}")


if __name__ == "__main__":
    main()

"""Serving throughput per replica: `lesionseg serve` against Ray Serve with 1 and 2 replicas, one run.

    python benchmarks/ray_serve.py --clients 8 --duration 30

Every setup gets the same 1024×768 JPEG from the same number of concurrent clients. Ray Serve
replicas use one inference thread each (deploy/ray-serve.yaml); the single process uses all cores.
Prints a table and writes benchmarks/results/ray_serve.json.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPOSITORY), str(REPOSITORY / "benchmarks")]
from load_test import run_clients  # noqa: E402
from serving import jpeg_bytes, source_image  # noqa: E402
from tests.conftest import RayServeApplication, RunningServer  # noqa: E402

RESULTS = REPOSITORY / "benchmarks" / "results" / "ray_serve.json"


def measure(url: str, data: bytes, clients: int, duration: float) -> dict:
    asyncio.run(run_clients(url, data, clients, 5))  # warm-up: every replica has served
    record = asyncio.run(run_clients(url, data, clients, duration))
    latencies = [seconds * 1000 for status, seconds in record if status == 200]
    return {
        "requests": len(record),
        "errors": sum(1 for status, _ in record if status != 200),
        "images_per_second": round(len(latencies) / duration, 2),
        "median_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0)
    arguments = parser.parse_args()

    data = jpeg_bytes(source_image(), 1024, 768)
    rows = []
    server = RunningServer()
    try:
        rows.append(
            {
                "setup": "lesionseg serve",
                "replicas": 1,
                **measure(server.url, data, arguments.clients, arguments.duration),
            }
        )
    finally:
        server.stop()
    for replicas in (1, 2):
        with tempfile.TemporaryDirectory() as workspace:
            application = RayServeApplication(Path(workspace), replicas)
            try:
                result = measure(application.url, data, arguments.clients, arguments.duration)
            finally:
                application.stop()
        rows.append({"setup": "Ray Serve", "replicas": replicas, **result})

    print(f"{arguments.clients} clients, {arguments.duration:.0f} s each, 1024×768 JPEG, {os.cpu_count()} CPU cores\n")
    print("| setup | replicas | requests | errors | images/s | per replica | median ms | p95 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['setup']} | {row['replicas']} | {row['requests']} | {row['errors']} | {row['images_per_second']}"
            f" | {row['images_per_second'] / row['replicas']:.2f} | {row['median_ms']} | {row['p95_ms']} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"clients": arguments.clients, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

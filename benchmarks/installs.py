"""The two installs side by side, in one run: start-up time to /ready and resident memory after ten
predictions, for each environment's `lesionseg serve` on the embedded model.

    .venv/bin/python benchmarks/installs.py [--environment .venv-serve] [--environment .venv]

`make serve` builds .venv-serve (the lean install, ONNX Runtime) and `make install` builds .venv (the full
one, PyTorch). Install size and time are measured when each is built (see docs/performance.md).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPOSITORY), str(REPOSITORY / "benchmarks")]
from load_test import resident_megabytes  # noqa: E402
from serving import jpeg_bytes, source_image  # noqa: E402
from tests.conftest import RunningServer  # noqa: E402


def measure(environment: Path, image: bytes) -> str:
    started = time.perf_counter()
    server = RunningServer(command=[str(environment / "bin" / "lesionseg")])
    ready_seconds = time.perf_counter() - started
    try:
        timings = []
        for _ in range(10):
            request_started = time.perf_counter()
            response = httpx.post(f"{server.url}/predict/", files={"file": ("a.jpg", image, "image/jpeg")}, timeout=60)
            response.raise_for_status()
            timings.append((time.perf_counter() - request_started) * 1000)
        installed = {path.name for path in (environment / "lib").glob("python*/site-packages/*")}
        backend = "pytorch" if "torch" in installed else "onnx"  # what `auto` picks there
        resident = resident_megabytes(server.process.pid)
        peak = resident_megabytes(server.process.pid, "VmHWM")
    finally:
        server.stop()
    return (
        f"| {environment.name} | {backend} | {ready_seconds:.1f} | {resident:.0f} | {peak:.0f} |"
        f" {statistics.median(timings):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--environment", type=Path, action="append", help="a virtual environment with lesionseg")
    arguments = parser.parse_args()
    environments = arguments.environment or [REPOSITORY / ".venv-serve", REPOSITORY / ".venv"]
    image = jpeg_bytes(source_image(), 1024, 768)
    print(
        "| environment | backend | start to /ready (s) | resident MB after 10 requests | peak MB | median request ms |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for environment in environments:
        print(measure(environment, image))


if __name__ == "__main__":
    main()

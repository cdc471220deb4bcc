"""Does sharing trunk runs between concurrent requests pay? LESIONSEG_MAX_BATCH_SIZE 1 against 4.

    python benchmarks/request_batching.py --clients 16 --duration 20

For each backend, a fresh server with batching off (1) and on (4) takes the same 1024×768 JPEG from
the same number of concurrent clients; same run, so compare the ratios. Prints a table and writes
benchmarks/results/request_batching.json.
"""

import argparse
import json
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPOSITORY), str(REPOSITORY / "benchmarks")]
from ray_serve import measure  # noqa: E402
from serving import jpeg_bytes, source_image  # noqa: E402
from tests.conftest import RunningServer  # noqa: E402

RESULTS = REPOSITORY / "benchmarks" / "results" / "request_batching.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0)
    arguments = parser.parse_args()

    data = jpeg_bytes(source_image(), 1024, 768)
    rows = []
    for backend in ("pytorch", "onnx"):
        for max_batch_size in (1, 4):
            server = RunningServer(backend=backend, max_batch_size=str(max_batch_size))
            try:
                result = measure(server.url, data, arguments.clients, arguments.duration)
            finally:
                server.stop()
            rows.append({"backend": backend, "max_batch_size": max_batch_size, **result})
    print(f"{arguments.clients} clients, {arguments.duration:.0f} s each, 1024×768 JPEG, samples=10\n")
    print("| backend | max batch | requests | errors | images/s | median ms | p95 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['backend']} | {row['max_batch_size']} | {row['requests']} | {row['errors']}"
            f" | {row['images_per_second']} | {row['median_ms']} | {row['p95_ms']} |"
        )
    for backend in ("pytorch", "onnx"):
        off, on = (row for row in rows if row["backend"] == backend)
        print(f"{backend}: batching gives {on['images_per_second'] / off['images_per_second']:.2f}× the throughput")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"clients": arguments.clients, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Load test: N concurrent clients against a fresh `lesionseg serve` for a fixed time.

Run: `make loadtest` (16 clients, 2 minutes) or `.venv/bin/python benchmarks/load_test.py --clients 1 4 16
--duration 30`. Prints a table, writes benchmarks/results/load_test.json, and exits non-zero if any
response was a 5xx, any request went unanswered, or the server's memory grew by 10 % or more after a
15-second warm-up at the same load.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
# The benchmarks share the tests' way of starting a real server, and the latency benchmark's images.
sys.path[:0] = [str(REPOSITORY), str(REPOSITORY / "benchmarks")]
from tests.conftest import RunningServer  # noqa: E402

RESULTS = REPOSITORY / "benchmarks" / "results" / "load_test.json"


def resident_megabytes(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS), or the most it has been since the process started (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


async def client_loop(client: httpx.AsyncClient, data: bytes, deadline: float, record: list) -> None:
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            response = await client.post("/predict/", files={"file": ("a.jpg", data, "image/jpeg")})
            record.append((response.status_code, time.perf_counter() - started))
        except httpx.HTTPError as error:
            record.append((f"lost: {type(error).__name__}", time.perf_counter() - started))


async def run_clients(url: str, data: bytes, clients: int, duration: float) -> list:
    record: list = []
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        await asyncio.gather(*(client_loop(client, data, deadline, record) for _ in range(clients)))
    return record


def main() -> int:
    from serving import jpeg_bytes, source_image

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[16])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per client count")
    arguments = parser.parse_args()

    data = jpeg_bytes(source_image(), 1024, 768)
    server = RunningServer()
    rows, healthy = [], True
    try:
        pid = server.process.pid
        memory_idle = resident_megabytes(pid)
        # Warm-up at full load: concurrent requests need a bigger working set than one at a time, and
        # reaching it is not growth. Growth is what comes after, under the same load.
        asyncio.run(run_clients(server.url, data, max(arguments.clients), 15))
        memory_start = resident_megabytes(pid)
        for clients in arguments.clients:
            record = asyncio.run(run_clients(server.url, data, clients, arguments.duration))
            statuses = [status for status, _ in record]
            latencies = [seconds * 1000 for status, seconds in record if status == 200]
            server_errors = sum(1 for status in statuses if isinstance(status, int) and status >= 500)
            lost = sum(1 for status in statuses if isinstance(status, str))
            rows.append(
                {
                    "clients": clients,
                    "requests": len(record),
                    "ok": statuses.count(200),
                    "server_errors": server_errors,
                    "lost": lost,
                    "images_per_second": statuses.count(200) / arguments.duration,
                    "median_ms": statistics.median(latencies) if latencies else float("nan"),
                    "p95_ms": float(np.percentile(latencies, 95)) if latencies else float("nan"),
                }
            )
            healthy &= server_errors == 0 and lost == 0
        memory_end = resident_megabytes(pid)
    finally:
        server.stop()
    growth = memory_end / memory_start - 1
    healthy &= growth < 0.10

    columns = ("clients", "requests", "ok", "5xx", "lost", "images/s", "median ms", "p95 ms")
    print(" ".join(f"{name:>9}" for name in columns))
    for row in rows:
        print(
            f"{row['clients']:>9} {row['requests']:>9} {row['ok']:>9} {row['server_errors']:>9} {row['lost']:>9}"
            f" {row['images_per_second']:>9.2f} {row['median_ms']:>9.1f} {row['p95_ms']:>9.1f}"
        )
    print(
        f"server resident memory: {memory_idle:.0f} MB idle, {memory_start:.0f} MB after 15 s of warm-up at full"
        f" load, {memory_end:.0f} MB at the end ({growth:+.1%})"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"rows": rows, "memory_idle_mb": memory_idle, "memory_start_mb": memory_start, "memory_end_mb": memory_end},
            indent=2,
        )
        + "\n"
    )
    print("PASS" if healthy else "FAIL: server errors, lost responses or memory growth of 10 % or more")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

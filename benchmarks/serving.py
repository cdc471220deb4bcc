"""The serving benchmark: one command, one run, every number as a ratio against a baseline measured
in the same run (this machine is shared and noisy).

    make benchmark            # or: .venv/bin/python benchmarks/serving.py [--quick]

Measures on the embedded model, for both backends: POST /predict/ latency at samples 1/10/30/64 on a
1024×768 and a 4000×3000 JPEG, and each format's 4000×3000 request against its floor (the 1024×768 request
plus what a bigger photo must add: `large_image_additions`); the seed's T-full-passes method against
trunk-once + batched tail;
throughput and p95 with 1, 4 and 16 concurrent clients; server start-up time and resident memory;
the trunk's achieved GFLOP/s against this machine's matrix-multiply GFLOP/s. Prints tables and
writes benchmarks/results/serving.json.

Then the key ratios against their targets and against the committed baseline of this CPU's family
(benchmarks/baseline.json: AVX-512 VNNI, AVX-512, AVX2): the run exits 1 when a ratio is more than 25 % worse
than its baseline. `--update-baseline` records this run's ratios as its family's new baseline.
"""

import argparse
import asyncio
import io
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPOSITORY), str(REPOSITORY / "benchmarks")]
from load_test import resident_megabytes, run_clients  # noqa: E402
from tests.conftest import RunningServer  # noqa: E402

import lesionseg  # noqa: E402
from lesionseg.config import DEFAULT_WEIGHTS  # noqa: E402
from lesionseg.imaging.decode import decode_upload  # noqa: E402
from lesionseg.predictor import Predictor  # noqa: E402
from lesionseg.uncertainty.full_pass_reference import full_pass_logits  # noqa: E402
from lesionseg.uncertainty.sampling import sample_logits  # noqa: E402

DATA_ROOT = REPOSITORY.parent / "shared" / "data"
RESULTS = REPOSITORY / "benchmarks" / "results" / "serving.json"
BASELINE = REPOSITORY / "benchmarks" / "baseline.json"
SAMPLE_COUNTS = (1, 10, 30, 64)
FORMATS = ("png", "mask", "json")
# A ratio this much above its baseline fails the run: timings here vary by about 10 % from run to run.
ALLOWED_REGRESSION = 1.25
# The targets for a 4000×3000 photo against a 1024×768 one, and for memory under load.
TARGETS = {"png": 2.5, "mask": 1.3, "json": 1.3, "memory": 1.5}
# Ten MC samples against one, over HTTP: only the tail is repeated, so they should cost little.
SAMPLES_TARGET = 1.15
# Every backend a user can choose; the MC cost is measured on each (the full tables on the first two).
SHIPPED_BACKENDS = ("pytorch", "onnx", "onnx-int8", "openvino", "openvino-f32", "openvino-int8")
# A request over HTTP against the same work in process (decode, predict, render): what the request path adds.
HTTP_TARGET = 1.3
# A 4000×3000 request against its floor: the 1024×768 request plus what a bigger photo must add
# (`large_image_additions`). Issue 27 measured 0.86–0.88 for mask and json and 1.24 for png, and asked to keep
# them there; the raw 4000×3000 / 1024×768 ratios above rise whenever the small request gets faster.
FLOOR_TARGET = 1.3


def source_image() -> np.ndarray:
    """A real dermoscopy photo where the shared data is present; otherwise a smooth synthetic lesion."""
    photos = sorted((DATA_ROOT / "unlabeled" / "isic-original-size").glob("*.jpg"))
    if photos:
        return cv2.imread(str(photos[0]))
    image = np.full((768, 1024, 3), (170, 140, 200), np.uint8)
    cv2.circle(image, (512, 384), 200, (60, 40, 90), -1)
    return cv2.GaussianBlur(image, (51, 51), 0)


def jpeg_bytes(image: np.ndarray, width: int, height: int) -> bytes:
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def summarise_timings(timings: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(timings), "p95_ms": float(np.percentile(timings, 95))}


def time_http(url: str, data: bytes, samples: int, repeats: int, warmup: int, format: str = "png") -> dict:
    timings = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for index in range(warmup + repeats):
            started = time.perf_counter()
            response = client.post(
                "/predict/",
                files={"file": ("x.jpg", io.BytesIO(data), "image/jpeg")},
                params={"samples": samples, "seed": 0, "format": format},
            )
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            if index >= warmup:
                timings.append(elapsed)
    return summarise_timings(timings)


def sampling_cost(url: str, data: bytes, repeats: int, warmup: int) -> dict:
    """Median ms of one MC sample and of ten, without test-time augmentation, the two requests alternating so
    that the machine's drift falls on both alike. As `format=mask`, whose bytes do not depend on the sample
    count: with `png`, one sample's heatmap is all zero and compresses to nothing, while ten samples' heatmap
    has content that costs 10-15 ms more to encode, a price of the picture rather than of the sampling."""
    timings: dict[int, list[float]] = {1: [], 10: []}
    with httpx.Client(base_url=url, timeout=300) as client:
        for index in range(warmup + repeats):
            for samples in timings:
                started = time.perf_counter()
                response = client.post(
                    "/predict/",
                    files={"file": ("x.jpg", io.BytesIO(data), "image/jpeg")},
                    params={"samples": samples, "seed": 0, "tta": "false", "format": "mask"},
                )
                response.raise_for_status()
                if index >= warmup:
                    timings[samples].append((time.perf_counter() - started) * 1000)
    return {f"samples_{samples}_ms": statistics.median(values) for samples, values in timings.items()}


def http_against_in_process(url: str, data: bytes, backend: str, repeats: int, warmup: int) -> dict:
    """Median ms of the default request (`format=png`, 10 samples) over HTTP and of the same work in this
    process through `Segmenter.predict(...).render("png")` on the same backend, alternating so that drift
    falls on both; the server idles while this process works, and the other way round."""
    segmenter = lesionseg.load(backend=backend)
    timings: dict[str, list[float]] = {"http_ms": [], "in_process_ms": []}
    with httpx.Client(base_url=url, timeout=300) as client:
        for index in range(warmup + repeats):
            started = time.perf_counter()
            response = client.post(
                "/predict/", files={"file": ("x.jpg", io.BytesIO(data), "image/jpeg")}, params={"seed": 0}
            )
            response.raise_for_status()
            middle = time.perf_counter()
            segmenter.predict(data, seed=0).render("png")
            ended = time.perf_counter()
            if index >= warmup:
                timings["http_ms"].append((middle - started) * 1000)
                timings["in_process_ms"].append((ended - middle) * 1000)
    return {name: statistics.median(values) for name, values in timings.items()}


def sampling_by_backend(data: bytes, repeats: int, warmup: int) -> dict[str, dict]:
    """`sampling_cost` on a server of each shipped backend, one at a time."""
    costs = {}
    for backend in SHIPPED_BACKENDS:
        server = RunningServer(backend=backend)
        try:
            costs[backend] = sampling_cost(server.url, data, repeats, warmup)
        finally:
            server.stop()
    return costs


def print_sampling_by_backend(costs: dict[str, dict]) -> None:
    print(f"\nMC samples over HTTP, 1024×768, format=mask, no TTA (ms), target ≤ {SAMPLES_TARGET}")
    print(f"{'backend':>14} {'samples=1':>10} {'samples=10':>11} {'ratio':>6}")
    for backend, cost in costs.items():
        ratio = cost["samples_10_ms"] / cost["samples_1_ms"]
        verdict = "met" if ratio <= SAMPLES_TARGET else "MISSED"
        print(f"{backend:>14} {cost['samples_1_ms']:>10.1f} {cost['samples_10_ms']:>11.1f} {ratio:>6.2f} {verdict}")


def start_timed(backend: str) -> tuple[RunningServer, float]:
    started = time.perf_counter()
    server = RunningServer(backend=backend)
    return server, time.perf_counter() - started


def measure_backend(backend: str, images: dict[str, bytes], repeats: int, warmup: int, duration: float) -> dict:
    server, startup_seconds = start_timed(backend)
    try:
        loaded_mb = resident_megabytes(server.process.pid)  # the model loaded and warmed, nothing served yet
        latency = [
            {
                "backend": backend,
                "image": name,
                "samples": samples,
                **time_http(server.url, data, samples, repeats, warmup),
            }
            for name, data in images.items()
            for samples in SAMPLE_COUNTS
        ]
        sampling = sampling_cost(server.url, images["1024x768"], max(repeats, 15), warmup)
        request_path = http_against_in_process(server.url, images["1024x768"], backend, max(repeats, 15), warmup)
        concurrency = []
        for clients in (1, 4, 16):
            record = asyncio.run(run_clients(server.url, images["1024x768"], clients, duration))
            ok = [seconds * 1000 for status, seconds in record if status == 200]
            errors = sum(1 for status, _ in record if status != 200)
            concurrency.append(
                {
                    "backend": backend,
                    "clients": clients,
                    "images_per_second": len(ok) / duration,
                    "errors": errors,
                    **summarise_timings(ok),
                }
            )
        peak_mb = resident_megabytes(server.process.pid, "VmHWM")  # over 4000×3000 images and 16 clients
        formats = [
            {"image": name, "format": format, **time_http(server.url, data, 10, repeats, warmup, format)}
            for format in FORMATS
            for name, data in images.items()
        ]
        large_image_peak_mb = peak_under_large_images(server, images["4000x3000"], duration)
    finally:
        server.stop()
    return {
        "startup_seconds": startup_seconds,
        "memory_mb": loaded_mb,
        "peak_memory_mb": peak_mb,
        "large_image_peak_memory_mb": large_image_peak_mb,
        "latency": latency,
        "sampling_cost": sampling,
        "request_path": request_path,
        "concurrency": concurrency,
        "formats": formats,
    }


def peak_under_large_images(server: RunningServer, data: bytes, duration: float) -> float:
    """The server's peak resident memory while 16 clients send 4000×3000 photos, counted from now: writing 5
    to clear_refs resets the kernel's high-water mark (VmHWM) to the current resident size."""
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")
    record = asyncio.run(run_clients(server.url, data, 16, duration))
    if not any(status == 200 for status, _ in record):
        raise RuntimeError("no 4000×3000 request succeeded under 16 clients")
    return resident_megabytes(server.process.pid, "VmHWM")


def median_ms(function, repeats: int) -> float:
    function()  # warm-up: first calls load code and grow the allocator
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def large_image_additions(images: dict[str, bytes], repeats: int) -> dict[str, float]:
    """What a 4000×3000 photo must add to a 1024×768 request, in process (median ms, the large minus the
    small): its decode at reduced scale (JPEG's draft mode, to the model's needs), one resize of a
    model-sized map to its size, and the cheapest encoding of a picture its size (a mask PNG at the fastest
    compression). The floor of a 4000×3000 request is the 1024×768 one plus these."""
    input_size = Predictor.from_checkpoint(DEFAULT_WEIGHTS, "onnx").input_size
    costs = {name: image_costs(data, name, input_size, repeats) for name, data in images.items()}
    return {step: costs["4000x3000"][step] - costs["1024x768"][step] for step in costs["4000x3000"]}


def image_costs(data: bytes, name: str, input_size: int, repeats: int) -> dict[str, float]:
    width, height = (int(side) for side in name.split("x"))
    map_at_model_size = np.random.default_rng(0).random((input_size, input_size), dtype=np.float32)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 255, -1)
    return {
        "decode": median_ms(lambda: decode_upload(data, 10**9, 16, draft_size=2 * input_size), repeats),
        "resize": median_ms(lambda: cv2.resize(map_at_model_size, (width, height)), repeats),
        "encoding": median_ms(lambda: cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 1]), repeats),
    }


def floor_ms(small_ms: float, additions: dict[str, float]) -> float:
    return small_ms + sum(additions.values())


def measure_sampling(repeats: int) -> list[dict]:
    """In process, PyTorch: the seed's T full passes against trunk once + batched tail, same masks."""
    predictor = Predictor.from_checkpoint(DEFAULT_WEIGHTS)
    batch = predictor.model_input(cv2.cvtColor(source_image(), cv2.COLOR_BGR2RGB))
    methods = {
        "batched tail": lambda samples: sample_logits(predictor.backend, predictor.config, batch, samples, 0),
        "full passes (seed)": lambda samples: full_pass_logits(
            predictor.backend.model, predictor.config, batch, samples, 0
        ),
    }
    rows = []
    for samples in SAMPLE_COUNTS:
        for method, function in methods.items():
            function(samples)
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                function(samples)
                timings.append((time.perf_counter() - started) * 1000)
            rows.append({"method": method, "samples": samples, "median_ms": statistics.median(timings)})
    return rows


def measure_compute(repeats: int) -> dict[str, float]:
    """The trunk's GFLOP/s against a large fp32 matrix multiply on the same threads: the ceiling."""
    predictor = Predictor.from_checkpoint(DEFAULT_WEIGHTS)
    model = predictor.backend.model
    size = predictor.input_size
    image = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            model.forward_trunk(image)
        flops = counter.get_total_flops()
        model.forward_trunk(image)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.forward_trunk(image)
            timings.append(time.perf_counter() - started)
        left, right = torch.randn(2048, 2048), torch.randn(2048, 2048)
        left @ right
        matmul_timings = []
        for _ in range(max(3, repeats // 3)):
            started = time.perf_counter()
            left @ right
            matmul_timings.append(time.perf_counter() - started)
    trunk_gflops = flops / statistics.median(timings) / 1e9
    matmul_gflops = 2 * 2048**3 / statistics.median(matmul_timings) / 1e9
    return {
        "trunk_gflop_per_image": flops / 1e9,
        "trunk_gflops_per_second": trunk_gflops,
        "matmul_gflops_per_second": matmul_gflops,
        "fraction_of_ceiling": trunk_gflops / matmul_gflops,
        "threads": torch.get_num_threads(),
    }


def print_report(report: dict) -> None:
    print("POST /predict/ latency, one client (ms)")
    print(
        f"{'backend':>8} {'image':>10} {'samples':>8} {'median':>8} {'p95':>8}"
        f" {'× samples=1':>12} {'onnx / pytorch':>15}"
    )
    latency = [row for backend in report["backends"].values() for row in backend["latency"]]
    for row in latency:
        base = next(
            r for r in latency if r["backend"] == row["backend"] and r["image"] == row["image"] and r["samples"] == 1
        )
        torch_row = next(
            r
            for r in latency
            if r["backend"] == "pytorch" and r["image"] == row["image"] and r["samples"] == row["samples"]
        )
        print(
            f"{row['backend']:>8} {row['image']:>10} {row['samples']:>8} {row['median_ms']:>8.1f} {row['p95_ms']:>8.1f}"
            f" {row['median_ms'] / base['median_ms']:>12.2f} {row['median_ms'] / torch_row['median_ms']:>15.2f}"
        )
    additions = report["large_image_additions"]
    print("\nPOST /predict/ by format, samples=10, one client (ms); the floor is the 1024×768 request plus what")
    print(
        "a 4000×3000 photo must add: "
        + ", ".join(f"{step} {milliseconds:.1f}" for step, milliseconds in additions.items())
        + f" (target ≤ {FLOOR_TARGET} × floor)"
    )
    print(f"{'backend':>8} {'format':>7} {'1024x768':>9} {'4000x3000':>10} {'ratio':>6} {'floor':>7} {'× floor':>8}")
    for backend, measured in report["backends"].items():
        for format in FORMATS:
            small, large = (
                next(row for row in measured["formats"] if row["format"] == format and row["image"] == image)
                for image in ("1024x768", "4000x3000")
            )
            floor = floor_ms(small["median_ms"], additions)
            print(
                f"{backend:>8} {format:>7} {small['median_ms']:>9.1f} {large['median_ms']:>10.1f}"
                f" {large['median_ms'] / small['median_ms']:>6.2f} {floor:>7.1f} {large['median_ms'] / floor:>8.2f}"
            )
    print("\nMC sampling in process, PyTorch, model resolution (ms)")
    print(f"{'samples':>8} {'batched tail':>13} {'full passes':>12} {'speed-up':>9}")
    for samples in SAMPLE_COUNTS:
        batched = next(r for r in report["sampling"] if r["samples"] == samples and r["method"] == "batched tail")
        full = next(r for r in report["sampling"] if r["samples"] == samples and r["method"] != "batched tail")
        print(
            f"{samples:>8} {batched['median_ms']:>13.1f} {full['median_ms']:>12.1f}"
            f" {full['median_ms'] / batched['median_ms']:>9.1f}"
        )
    print("\nConcurrent clients, 1024×768, samples=10")
    print(f"{'backend':>8} {'clients':>8} {'images/s':>9} {'median ms':>10} {'p95 ms':>8} {'errors':>7}")
    for backend in report["backends"].values():
        for row in backend["concurrency"]:
            print(
                f"{row['backend']:>8} {row['clients']:>8} {row['images_per_second']:>9.2f} {row['median_ms']:>10.1f}"
                f" {row['p95_ms']:>8.1f} {row['errors']:>7}"
            )
    print("\nThe request path, 1024×768, format=png, 10 samples (ms)\n backend     HTTP  in process  ratio")
    for name, backend in report["backends"].items():
        path = backend["request_path"]
        ratio = path["http_ms"] / path["in_process_ms"]
        print(f"{name:>8} {path['http_ms']:>8.1f} {path['in_process_ms']:>11.1f} {ratio:>6.2f}")
    print_sampling_by_backend(report["sampling_by_backend"])
    print("\nServer")
    for name, backend in report["backends"].items():
        print(
            f"{name:>8}: start-up to ready {backend['startup_seconds']:.1f} s,"
            f" resident memory {backend['memory_mb']:.0f} MB with the model loaded,"
            f" {backend['peak_memory_mb']:.0f} MB at peak,"
            f" {backend['large_image_peak_memory_mb']:.0f} MB at peak under 16 clients of 4000×3000"
        )
    compute = report["compute"]
    print(
        f"\nTrunk: {compute['trunk_gflop_per_image']:.2f} GFLOP per image"
        f" at {compute['trunk_gflops_per_second']:.1f} GFLOP/s;"
        f" matrix multiply {compute['matmul_gflops_per_second']:.1f} GFLOP/s on {compute['threads']} threads:"
        f" {compute['fraction_of_ceiling']:.1%} of the ceiling"
    )


def key_ratios(report: dict) -> dict[str, float]:
    """The numbers the baseline keeps: each a ratio of two measurements from this run, lower is better."""
    ratios = {}
    for backend, measured in report["backends"].items():
        for format in FORMATS:
            small, large = (
                next(row for row in measured["formats"] if row["format"] == format and row["image"] == image)
                for image in ("1024x768", "4000x3000")
            )
            ratios[f"{backend}: format={format}, 4000x3000 / 1024x768"] = large["median_ms"] / small["median_ms"]
            floor = floor_ms(small["median_ms"], report["large_image_additions"])
            ratios[f"{backend}: format={format}, 4000x3000 / floor"] = large["median_ms"] / floor
        ratios[f"{backend}: peak memory, 16 clients of 4000x3000 / idle"] = (
            measured["large_image_peak_memory_mb"] / measured["memory_mb"]
        )
        cost = measured["sampling_cost"]
        ratios[f"{backend}: samples=10 / samples=1, 1024x768"] = cost["samples_10_ms"] / cost["samples_1_ms"]
        path = measured["request_path"]
        ratios[f"{backend}: HTTP / in process, format=png, 1024x768"] = path["http_ms"] / path["in_process_ms"]
    for backend, cost in report["sampling_by_backend"].items():
        if backend not in report["backends"]:
            ratios[f"{backend}: samples=10 / samples=1, 1024x768"] = cost["samples_10_ms"] / cost["samples_1_ms"]
    onnx, pytorch = (
        next(
            row for row in report["backends"][backend]["latency"] if row["image"] == "1024x768" and row["samples"] == 10
        )
        for backend in ("onnx", "pytorch")
    )
    ratios["onnx / pytorch, 1024x768, samples=10"] = onnx["median_ms"] / pytorch["median_ms"]
    batched, full = (
        next(row for row in report["sampling"] if row["samples"] == 10 and row["method"] == method)
        for method in ("batched tail", "full passes (seed)")
    )
    ratios["batched tail / full passes, samples=10"] = batched["median_ms"] / full["median_ms"]
    return ratios


def target_for(name: str) -> float | None:
    if "/ floor" in name:
        return FLOOR_TARGET
    if "peak memory" in name:
        return TARGETS["memory"]
    if "samples=10 / samples=1" in name:
        return SAMPLES_TARGET
    if "HTTP / in process" in name:
        return HTTP_TARGET
    return next((target for format, target in TARGETS.items() if f"format={format}," in name), None)


def cpu_family() -> str:
    """Which baseline applies: ratios move with the instruction sets (int8 and float kernels differ most between
    AVX-512 VNNI and AVX2), so each family keeps its own."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    for family, needed in (("avx512-vnni", "avx512_vnni"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if needed in flags:
            return family
    return "other"


def compare_with_baseline(ratios: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """Prints each ratio beside its target and baseline; returns the names of those that regressed."""
    print(f"\n{'key ratio (lower is better)':<56} {'now':>6} {'target':>7} {'baseline':>9} {'change':>7}")
    regressed = []
    for name, value in ratios.items():
        target, base = target_for(name), baseline.get(name)
        verdict = "" if target is None else ("  met" if value <= target else "  MISSED")
        change = "" if base is None else f"{value / base - 1:+.0%}"
        if base is not None and value > base * ALLOWED_REGRESSION:
            regressed.append(name)
            change += "  REGRESSION"
        target_text = "" if target is None else f"≤ {target}"
        base_text = "" if base is None else f"{base:.2f}"
        print(f"{name:<56} {value:>6.2f} {target_text:>7} {base_text:>9} {change:>7}{verdict}")
    return regressed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per concurrency level")
    parser.add_argument("--quick", action="store_true", help="5 repeats, 5 s per concurrency level")
    parser.add_argument("--update-baseline", action="store_true", help=f"record this run's ratios in {BASELINE.name}")
    parser.add_argument("--sampling-only", action="store_true", help="only the MC cost over HTTP, every backend")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.repeats, arguments.warmup, arguments.duration = 5, 1, 5.0

    image = source_image()
    images = {"1024x768": jpeg_bytes(image, 1024, 768), "4000x3000": jpeg_bytes(image, 4000, 3000)}
    if arguments.sampling_only:
        print_sampling_by_backend(sampling_by_backend(images["1024x768"], max(arguments.repeats, 15), arguments.warmup))
        return 0
    report = {
        "backends": {
            backend: measure_backend(backend, images, arguments.repeats, arguments.warmup, arguments.duration)
            for backend in ("pytorch", "onnx")
        },
        "large_image_additions": large_image_additions(images, max(arguments.repeats, 15)),
        "sampling": measure_sampling(arguments.repeats),
        "compute": measure_compute(arguments.repeats),
        "sampling_by_backend": sampling_by_backend(images["1024x768"], max(arguments.repeats, 15), arguments.warmup),
    }
    print_report(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {RESULTS.relative_to(REPOSITORY)}")

    ratios = key_ratios(report)
    family = cpu_family()
    baselines = json.loads(BASELINE.read_text())["by_cpu_family"] if BASELINE.is_file() else {}
    print(f"\nbaseline: this CPU's family, {family}" + ("" if family in baselines else " (none recorded yet)"))
    regressed = compare_with_baseline(ratios, baselines.get(family, {}).get("ratios", {}))
    if arguments.update_baseline:
        command = " ".join(["python benchmarks/serving.py", *sys.argv[1:]])
        baselines[family] = {"command": command, "measured": time.strftime("%Y-%m-%d"), "ratios": ratios}
        BASELINE.write_text(json.dumps({"by_cpu_family": baselines}, indent=2) + "\n")
        print(f"baseline updated for {family}: {BASELINE.relative_to(REPOSITORY)}")
        return 0
    if regressed:
        print(f"\n{len(regressed)} ratio(s) more than {ALLOWED_REGRESSION - 1:.0%} worse than the baseline")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU benchmark: serving on CUDA against the CPU in the same run, the masks' agreement, and `lesionseg batch`.

    python benchmarks/gpu.py --photo PHOTO.jpg --pairs FOLDER [--device cuda] [--out results.json]

On the embedded model through the public Python API (`lesionseg.load(device=...)`), PyTorch backend:
- in process, a 1024×768 JPEG, flip TTA, mask out: p50 and p90 at T = 1, 10 and 30, on `--device` and on the
  CPU, with the request's own decode / preprocess / inference split; at T = 10 with the network channels-last,
  the layout the default was chosen against; and at T = 1, 10 and 30 with the trunk and the summary replayed as
  CUDA graphs (backends/cuda_graphs.py), which is not a setting until this shows it pays;
- agreement of the device's masks with the CPU's (T = 10, TTA, seed 0) on every picture in `--pairs`: the
  share of pixels that differ, the largest probability difference, and how far from the threshold the CPU's
  probability was at the pixels that differ;
- over HTTP (`lesionseg serve` on `--device`, one request at a time), T = 10: p50 and its ratio to in process;
- `lesionseg batch` on 128 variants of the photo, images/s, and once a quarter are done (start-up left out): on
  a GPU with its defaults (the cores in flight, the cores encoding), with CUDA graphs, encoding on the job's
  threads, and with 3 in flight on the threads (as the first GPU runs were); on the CPU with its defaults and
  with two encoder processes. For each, where an image's time went (the job's own table), and where the job's
  threads were (sampled every 5 ms).
Prints one table a section, and writes every number to `--out`. Runs on a CPU too (`--device cpu`), slowly:
that is how it is checked before a GPU machine is lent.
"""

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

import lesionseg
from lesionseg.backends.pytorch_backend import TorchBackend
from lesionseg.cli import main as lesionseg_main
from lesionseg.config import Settings
from lesionseg.model.checkpoint import load_checkpoint
from lesionseg.predictor import Predictor, load_gate
from lesionseg.segmenter import Segmenter


def photo_1024_by_768(path: Path) -> bytes:
    image = cv2.resize(cv2.imread(str(path)), (1024, 768), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def timed(segmenter, data: bytes, samples: int, repeats: int) -> dict:
    for _ in range(3):  # warm-up: kernels chosen, memory pooled
        segmenter.predict(data, samples=samples, tta=True, seed=0).render("mask")
    totals, parts = [], []
    for repeat in range(repeats):
        started = time.perf_counter()
        result = segmenter.predict(data, samples=samples, tta=True, seed=repeat)
        result.render("mask")
        totals.append((time.perf_counter() - started) * 1000)
        parts.append(result.prediction.timings_ms)
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(totals), 2),
        "p90_ms": round(float(np.percentile(totals, 90)), 2),
        **{f"{name}_ms": round(statistics.median(part[name] for part in parts), 2) for name in parts[0]},
    }


def variant(device: str, **backend_options: bool) -> Segmenter:
    """The embedded model on `device` with the network run otherwise than by default: channels-last instead of
    NCHW, or replayed as CUDA graphs."""
    weights = Settings().weights
    model, sidecar = load_checkpoint(weights)
    backend = TorchBackend(model, sidecar.architecture["input_size"], device=device, **backend_options)
    return Segmenter(Predictor(backend, sidecar, 1, load_gate(weights, sidecar), {"name": "pytorch", "reason": ""}))


def agreement(device_segmenter, cpu_segmenter, pictures: list[Path]) -> dict:
    differing, largest, nearest_margin, total_pixels, gate = 0, 0.0, 0.0, 0, 0.0
    for path in pictures:
        data = path.read_bytes()
        on_device = device_segmenter.predict(data, samples=10, tta=True, seed=0)
        on_cpu = cpu_segmenter.predict(data, samples=10, tta=True, seed=0)
        probability_device, probability_cpu = on_device.probability, on_cpu.probability
        changed = on_device.mask != on_cpu.mask
        differing += int(changed.sum())
        total_pixels += changed.size
        largest = max(largest, float(np.abs(probability_device - probability_cpu).max()))
        if changed.any():
            margin = np.abs(probability_cpu[changed] - on_cpu.prediction.threshold).max()
            nearest_margin = max(nearest_margin, float(margin))
        if on_device.ood_score is not None:
            gate = max(gate, abs(on_device.ood_score - on_cpu.ood_score))
    return {
        "pictures": len(pictures),
        "pixels_differing_fraction": differing / max(1, total_pixels),
        "largest_probability_difference": round(largest, 5),
        "largest_threshold_margin_of_a_differing_pixel": round(nearest_margin, 5),
        "largest_gate_score_difference": round(gate, 5),
    }


def over_http(photo: bytes, device: str, repeats: int) -> dict:
    """The same request as `timed`'s T = 10 over HTTP to `lesionseg serve` on `device`, one at a time: p50, and
    what it costs beyond the in-process call. Where the machine lacks the server's packages, says which."""
    try:
        import httpx
        import uvicorn  # noqa: F401 - `lesionseg serve` needs it: checked here to say so rather than fail
    except ImportError as missing:
        return {"skipped": f"HTTP not measured: {missing.name} is not installed here"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {**os.environ, "LESIONSEG_BACKEND": "pytorch", "LESIONSEG_DEVICE": device}
    server = subprocess.Popen(
        [sys.executable, "-m", "lesionseg.cli", "serve", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        files = {"file": ("photo.jpg", photo, "image/jpeg")}
        params = {"format": "mask", "samples": 10, "tta": "true"}
        totals = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for repeat in range(repeats + 3):
                started = time.perf_counter()
                answer = client.post("/predict/", files=files, params={**params, "seed": repeat})
                answer.raise_for_status()
                if repeat >= 3:  # after the warm-up, as in process
                    totals.append((time.perf_counter() - started) * 1000)
        return {"samples": 10, "p50_ms": round(statistics.median(totals), 2)}
    finally:
        server.terminate()
        server.wait(timeout=60)


def stage_medians(results: Path) -> dict:
    """Where an image's time went, from the job's own table: the median of each stage's milliseconds."""
    with open(results, newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row["status"] == "ok"]
    stages = ("read_ms", "decode_ms", "inference_ms", "encode_ms", "total_ms")
    return {stage: round(float(np.median([float(row[stage]) for row in rows])), 1) for stage in stages} if rows else {}


PERIODIC_THREAD = "benchmark-periodic"  # the samplers' own threads, which the stack sampler leaves out


class Periodic:
    """`tick()` every `interval_seconds` on a thread of its own, from `with` to its end, and once more at the end."""

    def __init__(self, interval_seconds: float) -> None:
        self.interval_seconds = interval_seconds
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name=PERIODIC_THREAD, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exception) -> None:
        self.stopped.set()
        self.thread.join()
        self.tick()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_seconds):
            self.tick()

    def tick(self) -> None:
        raise NotImplementedError


class StackSampler(Periodic):
    """Where a job's threads spend their time: every few milliseconds, the line each thread but the main one and
    the samplers' is at (with the nearest lesionseg line above it, where the innermost is a library's). How a
    GPU run shows what bounds `lesionseg batch` with no profiler installed there. A thread inside a C call (a
    convolution, a PNG encoder, a lock) is seen at the Python line that made it."""

    def __init__(self, interval_seconds: float = 0.005) -> None:
        super().__init__(interval_seconds)
        self.counts: Counter[str] = Counter()

    def tick(self) -> None:
        left_out = {thread.ident for thread in threading.enumerate() if thread.name == PERIODIC_THREAD}
        left_out.add(threading.main_thread().ident)
        for ident, frame in sys._current_frames().items():
            if ident not in left_out:
                self.counts[frame_place(frame)] += 1

    def top(self, count: int = 10) -> list[dict]:
        total = sum(self.counts.values()) or 1
        return [{"where": place, "share": round(n / total, 3)} for place, n in self.counts.most_common(count)]


class RowWatch(Periodic):
    """When each row of a job's results table appeared (it is flushed a row at a time): the rate once a quarter
    of the images are done, which leaves out the start-up (the model loading, the first kernels chosen, the
    encoder processes starting), a fixed cost a long archive does not feel."""

    def __init__(self, table: Path, interval_seconds: float = 0.02) -> None:
        super().__init__(interval_seconds)
        self.table = table
        self.seen: list[tuple[float, int]] = []

    def tick(self) -> None:
        rows = len(self.table.read_text().splitlines()) - 1 if self.table.is_file() else 0
        if not self.seen or rows != self.seen[-1][1]:
            self.seen.append((time.perf_counter(), rows))

    def steady_rate(self) -> float | None:
        if not self.seen:
            return None
        end_time, end_rows = self.seen[-1]
        start_time, start_rows = next((when, rows) for when, rows in self.seen if rows >= end_rows / 4)
        return round((end_rows - start_rows) / (end_time - start_time), 1) if end_time > start_time else None


def frame_place(frame) -> str:
    def name(of) -> str:
        return f"{Path(of.f_code.co_filename).name}:{of.f_code.co_name}:{of.f_lineno}"

    ours = frame
    while ours is not None and not ours.f_globals.get("__name__", "").startswith("lesionseg"):
        ours = ours.f_back
    if ours is None:
        return "outside lesionseg: an idle worker, the progress bar"
    return name(frame) if ours is frame else f"{name(frame)} < {name(ours)}"


def batch_throughput(
    photo: bytes,
    device: str,
    images: int,
    in_flight: int | None = None,
    encoder_processes: int | None = None,
    cuda_graphs: bool = False,
) -> dict:
    """`in_flight` and `encoder_processes` as `lesionseg batch` takes them (None: its default); `cuda_graphs`: the
    job's network replayed as CUDA graphs (LESIONSEG_CUDA_GRAPHS, which a job reads)."""
    with tempfile.TemporaryDirectory() as folder:
        inputs, outputs = Path(folder) / "in", Path(folder) / "out"
        inputs.mkdir()
        decoded = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
        for index in range(images):
            # Variants, not copies: each its own shift and flip, so no cache sees the same bytes twice.
            variant = np.roll(decoded, (index * 7) % 97, axis=1)[:, :: (1 if index % 2 else -1)]
            cv2.imwrite(str(inputs / f"{index:04d}.jpg"), variant, [cv2.IMWRITE_JPEG_QUALITY, 90])
        started = time.perf_counter()
        options = ["--device", device, "--backend", "pytorch"]
        options += ["--in-flight", str(in_flight)] if in_flight else []
        options += ["--encoder-processes", str(encoder_processes)] if encoder_processes is not None else []
        os.environ["LESIONSEG_CUDA_GRAPHS"] = str(cuda_graphs).lower()
        try:
            with StackSampler() as sampler, RowWatch(outputs / "results.csv") as rows:
                lesionseg_main(["batch", str(inputs), str(outputs), *options])
        finally:
            del os.environ["LESIONSEG_CUDA_GRAPHS"]
        seconds = time.perf_counter() - started
        stages = stage_medians(outputs / "results.csv")
    return {
        "images": images,
        "in_flight": in_flight or "default",
        "encoder_processes": "default" if encoder_processes is None else encoder_processes,
        "cuda_graphs": cuda_graphs,
        "seconds": round(seconds, 2),
        "images_per_second": round(images / seconds, 1),
        "steady_images_per_second": rows.steady_rate(),
        "median_ms": stages,
        "threads_were_at": sampler.top(),
    }


def latency_section(photo: bytes, device: str, repeats: int, device_segmenter, cpu_segmenter) -> list[dict]:
    """In process, each variant at its sample counts: a row each, or the variant's error (a finding, not a stop)."""
    variants = [(device, device_segmenter, (1, 10, 30)), ("cpu", cpu_segmenter, (10,))]
    if device != "cpu":
        variants.append((f"{device}, NHWC", variant(device, channels_last=True), (10,)))
        variants.append((f"{device}, graphs", variant(device, cuda_graphs=True), (1, 10, 30)))
    rows = []
    for name, segmenter, counts in variants:
        for samples in counts:
            try:
                row = timed(segmenter, photo, samples, max(5, repeats // 5) if name == "cpu" else repeats)
            except Exception as error:  # noqa: BLE001 - a variant that fails is a finding; the rest still run
                row = {"samples": samples, "error": f"{type(error).__name__}: {error}"}
            rows.append({"device": name, **row})
    print(f"{'device':<14} {'T':>3} {'p50 ms':>8} {'p90 ms':>8} {'decode':>7} {'prep':>6} {'infer':>7}")
    for row in rows:
        if "error" in row:
            print(f"{row['device']:<14} {row['samples']:>3} failed: {row['error']}")
            continue
        print(
            f"{row['device']:<14} {row['samples']:>3} {row['p50_ms']:>8} {row['p90_ms']:>8} "
            f"{row.get('decode_ms', 0):>7} {row.get('preprocess_ms', 0):>6} {row.get('inference_ms', 0):>7}"
        )
    return rows


def print_batch_section(rows: list[dict], images: int) -> None:
    print(f"lesionseg batch, {images} 1024×768 JPEGs")
    print(
        f"{'in flight':>9} {'encoders':>8} {'graphs':>6} {'images/s':>9} {'steady':>7} {'read':>6} {'decode':>7} "
        f"{'infer':>7} {'encode':>7} {'total':>7}  ms"
    )
    for row in rows:
        stages = row["median_ms"]
        print(
            f"{row['in_flight']:>9} {row['encoder_processes']:>8} {'yes' if row['cuda_graphs'] else 'no':>6} "
            f"{row['images_per_second']:>9} {row['steady_images_per_second'] or '':>7} {stages.get('read_ms', 0):>6} "
            f"{stages.get('decode_ms', 0):>7} {stages.get('inference_ms', 0):>7} {stages.get('encode_ms', 0):>7} "
            f"{stages.get('total_ms', 0):>7}"
        )
    for row in rows:
        graphs = ", CUDA graphs" if row["cuda_graphs"] else ""
        print(
            f"where the job's threads were, {row['in_flight']} in flight, {row['encoder_processes']} encoder "
            f"processes{graphs} (share of samples):"
        )
        for place in row["threads_were_at"]:
            print(f"  {place['share']:>6.1%}  {place['where']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, required=True, help="a dermoscopy photo, made 1024×768 here")
    parser.add_argument("--pairs", type=Path, required=True, help="a folder of pictures for the agreement check")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--agreement-pictures", type=int, default=100)
    parser.add_argument("--batch-images", type=int, default=128)
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()

    photo = photo_1024_by_768(arguments.photo)
    device_segmenter = lesionseg.load(backend="pytorch", device=arguments.device)
    cpu_segmenter = lesionseg.load(backend="pytorch", device="cpu")
    placement = device_segmenter.predictor.backend_choice
    report = {"device": placement["device"], "precision": placement["precision"]}
    print(f"in process, 1024×768 JPEG, TTA, mask out ({report['device']}, {report['precision']})")
    report["latency"] = latency_section(photo, arguments.device, arguments.repeats, device_segmenter, cpu_segmenter)
    for name in (arguments.device, f"{arguments.device}, graphs"):
        rows = {row["samples"]: row for row in report["latency"] if row["device"] == name and "p50_ms" in row}
        if 30 in rows and 1 in rows:
            report.setdefault("t30_over_t1", {})[name] = round(rows[30]["p50_ms"] / rows[1]["p50_ms"], 2)
            print(f"{name}: T = 30 over T = 1: {report['t30_over_t1'][name]}× (target ≤ 1.3)")
    device_rows = {row["samples"]: row for row in report["latency"] if row["device"] == arguments.device}

    report["http"] = over_http(photo, arguments.device, arguments.repeats)
    if "p50_ms" in report["http"]:
        report["http"]["over_in_process"] = round(report["http"]["p50_ms"] / device_rows[10]["p50_ms"], 2)
        print(f"over HTTP, T = 10: p50 {report['http']['p50_ms']} ms, {report['http']['over_in_process']}× in process")
    else:
        print(report["http"]["skipped"])

    pictures = sorted(arguments.pairs.rglob("*.jpg"))[: arguments.agreement_pictures]
    report["agreement"] = agreement(device_segmenter, cpu_segmenter, pictures)
    print("masks, device against CPU (T = 10, TTA, seed 0):", json.dumps(report["agreement"]))

    if arguments.out:  # kept now: the batch run may outlast a time limit
        arguments.out.write_text(json.dumps(report, indent=2) + "\n")
    del device_segmenter, cpu_segmenter
    # Most telling first, each kept as it ends (a time limit may stop the rest). On a GPU: the defaults (the cores
    # in flight, the cores encoding), with CUDA graphs, encoding on the threads, and as the first GPU runs were
    # (3 in flight, on the threads). On the CPU: its defaults, and with two encoder processes.
    on_gpu = arguments.device != "cpu"
    runs = [{}, {"cuda_graphs": True}, {"encoder_processes": 0}, {"in_flight": 3, "encoder_processes": 0}]
    report["batch"] = []
    for options in runs if on_gpu else [{}, {"encoder_processes": 2}]:
        report["batch"].append(batch_throughput(photo, arguments.device, arguments.batch_images, **options))
        if arguments.out:
            arguments.out.write_text(json.dumps(report, indent=2) + "\n")
    print_batch_section(report["batch"], arguments.batch_images)


if __name__ == "__main__":
    sys.exit(main())

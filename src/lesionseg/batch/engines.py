"""Two engines run the same segmenter over the pending images: one process here, or Ray Data actors.

Either way the driver (this process) receives each image's outcome and writes it to the results
table; workers only compute.
"""

import pickle
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace
from itertools import islice

import numpy as np
from tqdm import tqdm

from lesionseg.batch.inputs import JobImage
from lesionseg.batch.results import ResultsTable
from lesionseg.batch.worker import BatchWorker, ImageOutcome, JobSettings

# Images in flight per worker on the CPU (the local process, or each Ray actor): while one is in inference,
# the others are read, decoded or PNG-encoded, which are single-threaded and would leave cores idle.
IMAGES_IN_FLIGHT = 3


def run_local(
    pending: list[JobImage], job: JobSettings, table: ResultsTable, images_in_flight: int, encoder_processes: int = 0
) -> None:
    """`images_in_flight` images at once, on threads: the decoders and the inference backends release the
    interpreter while they work, and those in inference together share its runs. The outputs are encoded on
    the same threads, or by `encoder_processes` processes (batch/processes.py)."""
    segmenter = BatchWorker(job, max_batch_size=images_in_flight, encoder_processes=encoder_processes)
    try:
        segment_all(segmenter, pending, table, images_in_flight)
    finally:
        segmenter.close()


def segment_all(segmenter: BatchWorker, pending: list[JobImage], table: ResultsTable, images_in_flight: int) -> None:
    remaining = iter(pending)
    with (
        ThreadPoolExecutor(max_workers=images_in_flight) as pool,
        tqdm(total=len(pending), desc="segmenting", unit="image") as progress,
    ):
        in_flight = {
            pool.submit(segmenter.segment, item.identifier, item.path) for item in islice(remaining, images_in_flight)
        }
        while in_flight:
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                table.record(future.result())
                progress.update()
            in_flight |= {
                pool.submit(segmenter.segment, item.identifier, item.path) for item in islice(remaining, len(finished))
            }


class RaySegmenter:
    """A Ray Data actor: loads the model once, then segments rows, IMAGES_IN_FLIGHT at a time on
    threads (Ray's `max_concurrency`)."""

    def __init__(self, job: JobSettings) -> None:
        self.segmenter = BatchWorker(job, max_batch_size=IMAGES_IN_FLIGHT)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = [
            pickle.dumps(self.segmenter.segment(str(identifier), str(path)))
            for identifier, path in zip(batch["identifier"], batch["path"], strict=True)
        ]
        return {"outcome": np.array(outcomes, dtype=object)}


def run_ray(
    pending: list[JobImage], job: JobSettings, table: ResultsTable, address: str | None, workers: int | None
) -> None:
    """`address` joins a running cluster ("auto", or host:port); without it a local one starts.

    Each actor gets `job.threads` CPUs (one when 0), and as many actors run as the cluster has room
    for unless `workers` caps them. Ray Data restarts an actor that dies and retries its rows, so a
    killed worker costs time, not images.
    """
    try:
        import ray
    except ImportError:
        raise ValueError("the ray engine needs Ray: pip install -r requirements-ray.txt") from None

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    cpus_per_worker = job.threads or 1
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
    job = replace(job, threads=cpus_per_worker)
    dataset = ray.data.from_items(
        [{"identifier": item.identifier, "path": item.path} for item in pending],
        # Small blocks keep every actor busy to the end and make a retried block cheap.
        override_num_blocks=max(1, min(len(pending), 1000)),
    )
    outcomes = dataset.map_batches(
        RaySegmenter,
        fn_constructor_args=(job,),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=IMAGES_IN_FLIGHT),
        num_cpus=cpus_per_worker,
        max_concurrency=IMAGES_IN_FLIGHT,
    )
    for row in outcomes.iter_rows():
        outcome: ImageOutcome = pickle.loads(row["outcome"])
        table.record(outcome)


def run_batch(
    items: list[JobImage],
    job: JobSettings,
    table: ResultsTable,
    engine: str,
    address: str | None = None,
    workers: int | None = None,
    images_in_flight: int = IMAGES_IN_FLIGHT,
    encoder_processes: int = 0,
) -> dict:
    refused = [item for item in items if item.problem is not None]
    for item in refused:
        table.record_refused(item)
    pending = table.pending([item for item in items if item.problem is None])
    started = time.perf_counter()
    if pending and engine == "local":
        run_local(pending, job, table, images_in_flight, encoder_processes)
    elif pending and engine == "ray":
        run_ray(pending, job, table, address, workers)
    elif engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}; use local or ray")
    seconds = time.perf_counter() - started
    return {
        "engine": engine,
        "images": len(items),
        "already_finished": len(items) - len(pending) - len(refused),
        **table.counts,
        "seconds": round(seconds, 2),
        # Start-up included (model loading; for Ray also the cluster and its actors): what a user waits for.
        "images_per_second": round(len(pending) / seconds, 3) if pending else None,
    }

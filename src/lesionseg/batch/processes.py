"""A batch job's output encoding in processes of its own, so that it spreads over the machine's cores.

Encoding an image's outputs (the full-size mask and 16-bit uncertainty map, as PNGs) is most of the CPU work
a batch job does beside inference: 15-25 ms an image here, much of it in Python loops over bands that hold the
interpreter. On a GPU machine the inference takes a few milliseconds an image, and encoding on the job's own
threads left the GPU waiting on the interpreter (1.8-2.4 images/s on an H200 with 16 cores). Here each image's
result (its model-sized maps, a few hundred kilobytes) goes to a process, and its files come back.
"""

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

from lesionseg.imaging.decode import read_image_file
from lesionseg.segmenter import Result, decode_image


class ProcessDied(RuntimeError):
    """The process encoding an image ended without an answer, twice: that image fails, the job goes on."""


class EncoderProcesses:
    """`processes` worker processes, started fresh (never forked from a process that may hold a GPU). A process
    that dies (killed, out of memory) breaks the pool for every image in it at that moment: the pool is started
    again, and each of those images tried once more, so only an image that kills it twice fails."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.lock = threading.Lock()
        self.executor = self.start()

    def start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))

    def run(self, function, *arguments):
        for _ in range(2):  # the image once more in a new pool: another image may have broken this one
            executor = self.executor
            try:
                return executor.submit(function, *arguments).result()
            except BrokenProcessPool:
                with self.lock:
                    if self.executor is executor:  # the first thread to see it breaks starts the new pool
                        executor.shutdown(wait=False, cancel_futures=True)
                        self.executor = self.start()
        raise ProcessDied("the process encoding this image's outputs ended without an answer, twice")

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def encode_outputs(result: Result, names: dict[str, str], path: str, draft_size: int) -> tuple[dict[str, bytes], int]:
    """(each output's bytes by its name, the mask's area in pixels), on a job's thread or in a worker process.
    An overlay shows the photo at its own size: the file at `path` is decoded again for it, here, with the photo
    kept (as bands read from the file when drawn, which could not travel between processes). The model's
    picture stays the one decoded at `draft_size` for every image, so an image's mask is the same with or
    without an overlay (decoding at full size once gave a few boundary pixels of difference)."""
    if "overlay" in names:
        settings = result.settings
        data = read_image_file(Path(path), settings.max_upload_bytes)
        result = replace(result, decoded=decode_image(data, settings, draft_size, keep_photo=True))
    files = {name: result.render(kind) for kind, name in names.items()}
    return files, int(result.mask.sum())

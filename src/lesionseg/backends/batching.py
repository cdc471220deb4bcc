"""Concurrent requests share one trunk run: the part of inference that costs most batches well.

No request waits for company. One that finds the backend idle runs alone at once; requests that
arrive while an inference runs queue up, and whichever of them gets the backend next runs the
trunk for all of them (up to `max_batch_size`) as one batch. Under load, batches form by themselves;
at rest, latency is what it was. Each request's tail still runs on its own, with its own seed's
masks: the tail is small, and a request of 64 samples must not make its neighbours' batch huge.
"""

import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np

from lesionseg.uncertainty.sampling import Backend


@dataclass
class PendingTrunk:
    images: np.ndarray  # N×3×S×S
    features: tuple[list[np.ndarray], np.ndarray | None] | None = None  # the backend's trunk output
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.features is not None or self.error is not None


class TrunkBatcher:
    def __init__(self, backend: Backend, max_batch_size: int) -> None:
        self.backend = backend
        self.max_batch_size = max_batch_size
        # One inference at a time: the backend's own threads already use every core.
        self.inference_lock = threading.Lock()
        self.waiting_lock = threading.Lock()
        self.waiting: list[PendingTrunk] = []
        # Trunk runs counted by batch size: bounded by max_batch_size however long the server runs.
        self.runs_by_batch_size: Counter[int] = Counter()

    def trunk(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
        pending = PendingTrunk(images)
        with self.waiting_lock:
            self.waiting.append(pending)
        while not pending.done:
            with self.inference_lock:
                if pending.done:  # another thread ran it while this one waited for the backend
                    break
                with self.waiting_lock:
                    group = self.waiting[: self.max_batch_size]
                    del self.waiting[: self.max_batch_size]
                self.run(group)
        if pending.error is not None:
            raise pending.error
        return pending.features

    def run(self, group: list[PendingTrunk]) -> None:
        try:
            levels, descriptor = self.backend.trunk(np.concatenate([pending.images for pending in group]))
        except Exception as error:
            if len(group) > 1:  # run each alone, so only the request at fault gets an error
                for pending in group:
                    self.run([pending])
                return
            group[0].error = error
            return
        start = 0
        for pending in group:
            count = len(pending.images)
            rows = slice(start, start + count)
            pending.features = ([level[rows] for level in levels], None if descriptor is None else descriptor[rows])
            start += count
        self.runs_by_batch_size[len(group)] += 1

"""Cooperative cancellation of the work running on this thread, for requests that stopped waiting.

The runner of a piece of work (api/inference_queue.py) marks the thread with the request's
`Cancellation`; long per-request loops (rendering bands, PNG encoding) call `check()` between steps and
stop there once it is cancelled. Shared work, such as a trunk run for several requests, never checks.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_thread_state = threading.local()


class WorkCancelled(Exception):
    """Raised inside a worker thread when its request no longer waits for the result."""


class Cancellation:
    """Set from the event loop, read by the worker thread."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def cancel(self) -> None:
        self.event.set()


@contextmanager
def cancellable(cancellation: Cancellation) -> Iterator[None]:
    _thread_state.cancellation = cancellation
    try:
        yield
    finally:
        _thread_state.cancellation = None


def check() -> None:
    """Raises WorkCancelled if the work on this thread was cancelled; free when nothing is running."""
    cancellation = getattr(_thread_state, "cancellation", None)
    if cancellation is not None and cancellation.event.is_set():
        raise WorkCancelled

"""The bounded queue in front of the model, and the threads that do a request's blocking work.

A request holds its place in the queue until its last piece of work has really ended, not merely
until it stopped waiting. When a request is cancelled (its time limit passed, or the client went away)
its work is told to stop at its next check (lesionseg/cancellation.py), and its place is freed only when the thread is
done. So timed-out requests can never leave more hidden work running than the queue admits.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from lesionseg.api.errors import RequestRejected
from lesionseg.api.observability import Metrics
from lesionseg.cancellation import Cancellation, WorkCancelled, cancellable

Result = TypeVar("Result")


class Admission:
    """One request's place in the queue: held by the request itself and by each of its running works."""

    def __init__(self, gate: "InferenceGate", loop: asyncio.AbstractEventLoop) -> None:
        self.gate = gate
        self.loop = loop
        self.holders = 1
        self.cancellation = Cancellation()

    def __enter__(self) -> "Admission":
        return self

    def __exit__(self, *exception) -> None:
        if exception[0] is not None:
            self.cancellation.cancel()
        self.let_go()

    def let_go(self) -> None:
        self.holders -= 1
        if self.holders == 0:
            self.gate.release()

    def run_cancellable(self, function: Callable[..., Result], *arguments) -> Result:
        with cancellable(self.cancellation):
            try:
                return function(*arguments)
            except WorkCancelled:
                # Counted, so that an operator (and a test, on any machine) sees work stop rather than finish.
                self.gate.metrics.cancelled_work.inc()
                raise

    async def run(self, executor: Executor, function: Callable[..., Result], *arguments) -> Result:
        """`function(*arguments)` on `executor`, stopping at its next `cancellation.check()` if this
        request is cancelled; the place stays held until it has returned."""
        future = executor.submit(self.run_cancellable, function, *arguments)
        self.holders += 1

        def work_ended(_) -> None:
            try:
                self.loop.call_soon_threadsafe(self.let_go)
            except RuntimeError:  # the loop closed at shutdown: nothing is waiting any more
                pass

        future.add_done_callback(work_ended)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.cancellation.cancel()
            raise


class InferenceGate:
    """Admitted requests wait their turn; beyond `capacity`, 503 at once. An event-loop counter
    suffices: admission and release both happen on the loop, never in threads."""

    def __init__(self, capacity: int, metrics: Metrics) -> None:
        self.capacity = capacity
        self.admitted = 0
        self.metrics = metrics

    def admit(self) -> Admission:
        if self.admitted >= self.capacity:
            self.metrics.rejected_overload.inc()
            raise RequestRejected(
                503,
                f"the server is busy ({self.capacity} requests queued); retry shortly",
                headers={"Retry-After": "1"},
            )
        self.admitted += 1
        self.metrics.queue_depth.set(self.admitted)
        return Admission(self, asyncio.get_running_loop())

    def release(self) -> None:
        self.admitted -= 1
        self.metrics.queue_depth.set(self.admitted)

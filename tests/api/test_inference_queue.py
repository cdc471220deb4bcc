"""The queue keeps a cancelled request's place until its thread has really ended, and the work stops
at its next cancellation check."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lesionseg import cancellation
from lesionseg.api.errors import RequestRejected
from lesionseg.api.inference_queue import InferenceGate
from lesionseg.api.observability import Metrics


def slow_work(steps: int, finished: list[str], steps_done: list[int] | None = None) -> str:
    """Deliberately slow: 50 ms steps, each counted, then followed by a cancellation check."""
    for step in range(steps):
        time.sleep(0.05)
        if steps_done is not None:
            steps_done.append(step)
        cancellation.check()
    finished.append("done")
    return "done"


async def until(condition, attempts: int = 6000) -> None:
    """Waits on the loop for `condition()`: a hang guard of minutes, never a bound on how fast."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never came true")


def test_a_cancelled_request_keeps_its_place_until_its_thread_stops():
    async def scenario() -> None:
        gate = InferenceGate(capacity=1, metrics=Metrics())
        finished: list[str] = []
        steps_done: list[int] = []
        with ThreadPoolExecutor(max_workers=1) as executor:

            async def request() -> str:
                with gate.admit() as admission:
                    return await admission.run(executor, slow_work, 1000, finished, steps_done)

            task = asyncio.create_task(request())
            await until(lambda: len(steps_done) >= 2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The request has ended (and cancelled its work); its thread is still at work until its next check.
            steps_when_cancelled = len(steps_done)
            assert gate.admitted == 1
            with pytest.raises(RequestRejected):
                gate.admit()
            await until(lambda: gate.admitted == 0)
        # Counted, not timed: the step under way when it was cancelled may finish; no further one starts.
        assert len(steps_done) <= steps_when_cancelled + 1, (steps_when_cancelled, len(steps_done))
        assert finished == [], "the work stopped instead of running its 50 s to the end"

    asyncio.run(scenario())


def test_finished_work_returns_its_result_and_frees_its_place():
    async def scenario() -> None:
        gate = InferenceGate(capacity=1, metrics=Metrics())
        with ThreadPoolExecutor(max_workers=1) as executor:
            with gate.admit() as admission:
                assert await admission.run(executor, slow_work, 2, []) == "done"
            # The release is scheduled on the loop by the worker thread.
            await until(lambda: gate.admitted == 0)

    asyncio.run(scenario())


def test_a_cancelled_request_stops_only_its_own_thread():
    cancelled = cancellation.Cancellation()
    cancelled.cancel()
    outcomes = {}

    def work(name: str, marked: bool) -> None:
        try:
            if marked:
                with cancellation.cancellable(cancelled):
                    cancellation.check()
            else:
                cancellation.check()  # a thread with no request: the CLI, a batch job, a test
            outcomes[name] = "ran"
        except cancellation.WorkCancelled:
            outcomes[name] = "stopped"

    threads = [threading.Thread(target=work, args=args) for args in (("request", True), ("other", False))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == {"request": "stopped", "other": "ran"}
    # The mark is this thread's and ends with its work: the same thread checks freely afterwards.
    with cancellation.cancellable(cancelled):
        with pytest.raises(cancellation.WorkCancelled):
            cancellation.check()
    cancellation.check()

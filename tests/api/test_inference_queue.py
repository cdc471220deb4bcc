"""The queue keeps a cancelled request's place until its thread has really ended, and the work stops
at its next cancellation check."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lesionseg import cancellation
from lesionseg.api.errors import RequestRejected
from lesionseg.api.inference_queue import InferenceGate
from lesionseg.api.observability import Metrics


def slow_work(steps: int, finished: list[str]) -> str:
    """Deliberately slow: 50 ms steps, each followed by a cancellation check."""
    for _ in range(steps):
        time.sleep(0.05)
        cancellation.check()
    finished.append("done")
    return "done"


def test_a_cancelled_request_keeps_its_place_until_its_thread_stops():
    async def scenario() -> None:
        gate = InferenceGate(capacity=1, metrics=Metrics())
        finished: list[str] = []
        with ThreadPoolExecutor(max_workers=1) as executor:

            async def request() -> str:
                with gate.admit() as admission:
                    return await admission.run(executor, slow_work, 1000, finished)

            task = asyncio.create_task(request())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The request has ended; its thread is still at work until its next check.
            assert gate.admitted == 1
            with pytest.raises(RequestRejected):
                gate.admit()
            started = time.monotonic()
            while gate.admitted:
                await asyncio.sleep(0.01)
            assert time.monotonic() - started < 0.2
        assert finished == [], "the work stopped instead of running its 50 s to the end"

    asyncio.run(scenario())


def test_finished_work_returns_its_result_and_frees_its_place():
    async def scenario() -> None:
        gate = InferenceGate(capacity=1, metrics=Metrics())
        with ThreadPoolExecutor(max_workers=1) as executor:
            with gate.admit() as admission:
                assert await admission.run(executor, slow_work, 2, []) == "done"
            await asyncio.sleep(0.05)  # the release is scheduled on the loop by the worker thread
            assert gate.admitted == 0

    asyncio.run(scenario())


def test_checks_outside_any_request_never_raise():
    cancellation.check()

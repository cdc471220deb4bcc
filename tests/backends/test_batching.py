"""Concurrent requests share trunk runs, on the real model and real images, on both backends."""

import threading
from collections.abc import Callable

import numpy as np
import pytest

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.pairs import read_image
from lesionseg.predictor import Predictor

CONCURRENT = 6


def run_at_once(function: Callable, arguments: list) -> list:
    """`function(argument)` for each argument on its own thread, released together as concurrent
    requests would be; each result, or the exception it raised."""
    results: list = [None] * len(arguments)
    start = threading.Barrier(len(arguments))

    def work(index: int) -> None:
        start.wait()
        try:
            results[index] = function(arguments[index])
        except Exception as error:  # noqa: BLE001 - handed back to the test to assert on
            results[index] = error

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(arguments))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("backend", [pytest.param("pytorch", marks=pytest.mark.slow), "onnx"])
def test_batched_requests_get_what_each_would_get_alone(backend, isic_validation_pairs):
    images = [read_image(record.image_path) for record in isic_validation_pairs[:CONCURRENT]]
    batched = Predictor.from_checkpoint(DEFAULT_WEIGHTS, backend, max_batch_size=4)
    alone = Predictor.from_checkpoint(DEFAULT_WEIGHTS, backend, max_batch_size=1)

    results = run_at_once(lambda seed: batched.predict(images[seed], samples=10, seed=seed), list(range(CONCURRENT)))

    runs = batched.batcher.runs_by_batch_size
    assert max(runs) > 1, "requests released together should share a trunk run"
    assert max(runs) <= 4 and sum(size * count for size, count in runs.items()) == CONCURRENT
    for seed, result in enumerate(results):
        expected = alone.predict(images[seed], samples=10, seed=seed)
        # The same seed's dropout masks; only the float rounding of a batched convolution differs.
        assert np.abs(result.mean_probability - expected.mean_probability).max() < 1e-4
        assert np.abs(result.uncertainty_std - expected.uncertainty_std).max() < 1e-4
        assert (result.mask != expected.mask).mean() < 1e-4


def test_a_lone_request_runs_at_once_and_unbatched(predictor, real_image_path):
    rgb = read_image(real_image_path)
    runs_before = predictor.batcher.runs_by_batch_size.copy()
    first = predictor.predict(rgb, samples=10, seed=5)
    second = predictor.predict(rgb, samples=10, seed=5)
    assert predictor.batcher.runs_by_batch_size - runs_before == {1: 2}
    assert np.array_equal(first.uncertainty_std, second.uncertainty_std)


def test_a_failing_request_does_not_fail_the_requests_batched_with_it():
    batched = Predictor.from_checkpoint(DEFAULT_WEIGHTS, max_batch_size=4)
    size = batched.input_size
    images = [np.zeros((1, 3, size, size), np.float32)] * (CONCURRENT - 1) + [np.zeros((1, 5, size, size), np.float32)]

    results = run_at_once(batched.batcher.trunk, images)

    for levels, descriptor in results[:-1]:
        assert levels[0].shape[0] == descriptor.shape[0] == 1
    assert isinstance(results[-1], RuntimeError), "five channels: the network refuses it"

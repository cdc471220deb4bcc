"""What an operator relies on: readiness, metrics, request ids, JSON logs, graceful shutdown."""

import json
import threading
import time

import httpx
import pytest
from tests.conftest import RunningServer

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow


def test_ready_once_the_model_is_loaded(client):
    body = client.get("/ready").json()
    assert body["status"] == "ready" and body["model"] == "efficientnet_lite0_upernet"


def test_request_id_is_echoed_or_made(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/health").headers["x-request-id"]
    assert len(made) == 32 and made != client.get("/health").headers["x-request-id"]


def test_metrics_count_requests_latency_inference_and_samples(client, real_image_path):
    with open(real_image_path, "rb") as stream:
        data = stream.read()
    client.post("/predict/", files={"file": ("a.jpg", data, "image/jpeg")}, params={"samples": 20})
    client.post("/predict/", files={"file": ("a.jpg", b"junk", "image/jpeg")})
    text = client.get("/metrics").text
    assert 'lesionseg_requests_total{method="POST",route="/predict/",status="200"}' in text
    assert 'lesionseg_requests_total{method="POST",route="/predict/",status="415"}' in text
    assert 'lesionseg_request_seconds_bucket{le="0.5",route="/predict/"}' in text
    assert "lesionseg_inference_seconds_count" in text
    assert "lesionseg_mc_samples_bucket" in text
    assert "lesionseg_inference_queue_depth 0.0" in text


def test_json_logs_carry_the_request_id_and_shutdown_finishes_in_flight_work(large_jpeg_path):
    server = RunningServer()
    data = large_jpeg_path.read_bytes()
    results = {}

    def slow_request() -> None:
        response = httpx.post(
            f"{server.url}/predict/",
            files={"file": ("a.jpg", data, "image/jpeg")},
            params={"samples": 64},
            headers={"X-Request-ID": "in-flight-1"},
            timeout=120,
        )
        results["status"] = response.status_code

    worker = threading.Thread(target=slow_request)
    worker.start()
    # Stop only once the request is admitted to inference, so it is surely in flight.
    deadline = time.monotonic() + 30
    while "lesionseg_inference_queue_depth 1.0" not in httpx.get(f"{server.url}/metrics").text:
        assert time.monotonic() < deadline, "the request never reached inference"
        time.sleep(0.01)
    output = server.stop()
    worker.join(timeout=120)
    assert results.get("status") == 200, output[-3000:]
    entries = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is JSON
    request_lines = [entry for entry in entries if entry.get("request_id") == "in-flight-1"]
    assert request_lines and request_lines[0]["status"] == 200 and request_lines[0]["route"] == "/predict/"
    assert all(entry["level"] in {"debug", "info", "warning", "error"} for entry in entries)

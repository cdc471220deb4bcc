"""The second round of attacks, against a real server: formats that reach other programs, containers
that cost quadratic time, headers without limits, hostile EXIF, echoed field names, and work that
outlives its request. Each gets a fast, clear 4xx or a bounded log line, and /health stays fast."""

import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.conftest import RunningServer
from tests.hostile_files import encapsulated_postscript, png_with_exif_tags, tiff_with_pages

# /health answers this fast while the attacks run: it never waits behind them.
HEALTH_LATENCY_SECONDS = 0.5
HEADER_TIMEOUT_SECONDS = 2


@pytest.fixture(scope="module")
def tripwire(tmp_path_factory) -> Path:
    """A `gs` first on the server's PATH that leaves a mark if anything ever runs it."""
    folder = tmp_path_factory.mktemp("tripwire")
    ghostscript = folder / "gs"
    ghostscript.write_text(f"#!/bin/sh\ntouch {folder / 'ghostscript-ran'}\n")
    ghostscript.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def impatient_server(tripwire: Path):
    """A one-second request limit, a queue of one, a two-second header limit, and the tripwire."""
    server = RunningServer(
        environment={"PATH": f"{tripwire}:{Path('/usr/bin')}:{Path('/bin')}"},
        request_timeout_seconds="1",
        max_queue="1",
        header_timeout_seconds=str(HEADER_TIMEOUT_SECONDS),
    )
    yield server
    server.stop()


def health_latency(url: str) -> float:
    started = time.perf_counter()
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200
    return time.perf_counter() - started


def queue_depth(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    line = next(line for line in metrics.splitlines() if line.startswith("lesionseg_inference_queue_depth "))
    return float(line.split()[1])


def upload(data: bytes, name: str, content_type: str) -> dict:
    return {"file": (name, data, content_type)}


@pytest.mark.parametrize(("name", "content_type"), [("x.eps", "image/x-eps"), ("x.jpg", "application/octet-stream")])
def test_postscript_is_refused_and_never_reaches_ghostscript(impatient_server, tripwire, name, content_type):
    response = httpx.post(
        f"{impatient_server.url}/predict/", files=upload(encapsulated_postscript(), name, content_type)
    )
    assert response.status_code == 415
    assert "not an image format we can read" in response.json()["detail"]
    assert not (tripwire / "ghostscript-ran").exists()


def test_a_tiff_of_100000_pages_is_refused_at_once(impatient_server):
    data = tiff_with_pages(100_000)
    assert len(data) < 7_000_000
    started = time.perf_counter()
    response = httpx.post(f"{impatient_server.url}/predict/", files=upload(data, "pages.tif", "image/tiff"))
    assert response.status_code == 415 and "multi-frame" in response.json()["detail"]
    assert time.perf_counter() - started < 1.0
    assert queue_depth(impatient_server.url) == 0


def test_sixty_five_thousand_exif_warnings_become_one_bounded_json_log_line(impatient_server, real_image_path):
    lesion = io.BytesIO()
    Image.open(real_image_path).convert("RGB").save(lesion, format="PNG")
    data = png_with_exif_tags(lesion.getvalue(), 65_000)
    log_before = len(impatient_server.read_log())
    response = httpx.post(f"{impatient_server.url}/predict/", files=upload(data, "exif.png", "image/png"), timeout=30)
    assert response.status_code == 200
    time.sleep(0.2)
    written = impatient_server.read_log()[log_before:]
    assert len(written) < 10_000, f"{len(written)} characters logged for one request"
    lines = [json.loads(line) for line in written.splitlines()]  # every line is JSON
    warned = [line for line in lines if line["message"] == "the image decoder warned"]
    assert len(warned) == 1 and warned[0]["warnings"] == 65_000 and len(warned[0]["first"]) <= 3


def test_broken_images_get_their_4xx_naming_no_library_and_no_path(impatient_server, real_image_path):
    lesion = real_image_path.read_bytes()
    broken = [
        (lesion[: len(lesion) // 3], 400),  # truncated JPEG: a known format, damaged
        (b"\x89PNG\r\n\x1a\n" + bytes(40), 415),  # a PNG signature with a garbled header: no format recognised
        (b"II*\x00" + b"\xff" * 60, 415),  # a TIFF header pointing nowhere
        (b"BM" + b"\x00" * 60, 400),  # a BMP header with no size
    ]
    for data, status in broken:
        response = httpx.post(f"{impatient_server.url}/predict/", files=upload(data, "x.jpg", "image/jpeg"))
        assert response.status_code == status, (data[:8], response.status_code)
        detail = response.json()["detail"]
        for internal in ("PIL", "Pillow", "cv2", "Errno", "/tmp", "/usr", "Error:", "decoder"):
            assert internal not in detail, (internal, detail)


def test_a_form_with_many_long_field_names_gets_a_short_400(impatient_server, real_image_path):
    fields = {f"field-{index}-" + "x" * 900: "1" for index in range(900)}
    response = httpx.post(
        f"{impatient_server.url}/predict/",
        files=upload(real_image_path.read_bytes(), "a.jpg", "image/jpeg"),
        data=fields,
        timeout=30,
    )
    assert response.status_code == 400
    assert "unexpected form field" in response.json()["detail"] and "and 895 more" in response.json()["detail"]
    assert len(response.content) < 1000


def send_huge_header(port: int, megabytes: int, replies: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        try:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: ")
            for _ in range(megabytes):
                connection.sendall(b"a" * 1_000_000)
        except OSError:
            pass  # the server closed the connection: what we want
        try:
            replies.append(connection.recv(4096))
        except OSError:
            replies.append(b"")


def test_a_100_megabyte_header_is_refused_with_431_and_health_stays_fast(impatient_server):
    replies: list[bytes] = []
    started = time.perf_counter()
    sender = threading.Thread(target=send_huge_header, args=(impatient_server.port, 100, replies))
    sender.start()
    latencies = [health_latency(impatient_server.url) for _ in range(5)]
    sender.join(timeout=30)
    assert not sender.is_alive()
    assert time.perf_counter() - started < 5
    assert replies[0].startswith(b"HTTP/1.1 431"), replies[0][:200]
    assert b"request headers are larger than the limit" in replies[0]
    assert max(latencies) < HEALTH_LATENCY_SECONDS, latencies


def test_headers_sent_one_line_at_a_time_are_cut_off(impatient_server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=10) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(20):
                connection.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.5)
        except OSError:
            pass
        reply = connection.recv(4096)
    elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert HEADER_TIMEOUT_SECONDS <= elapsed < HEADER_TIMEOUT_SECONDS + 2
    assert health_latency(impatient_server.url) < HEALTH_LATENCY_SECONDS


def test_a_connection_that_sends_nothing_is_closed(impatient_server):
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=10) as connection:
        started = time.monotonic()
        reply = connection.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408") and time.monotonic() - started < HEADER_TIMEOUT_SECONDS + 2


def test_too_many_headers_get_431(impatient_server):
    response = httpx.get(f"{impatient_server.url}/health", headers={f"x-extra-{index}": "1" for index in range(150)})
    assert response.status_code == 431 and "limit is 100" in response.json()["detail"]


def test_bytes_that_are_not_http_get_a_json_400(impatient_server):
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=10) as connection:
        connection.sendall(b"\x16\x03\x01 this is a TLS hello, not HTTP\r\n\r\n")
        reply = connection.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400") and b'{"detail": "the request is not valid HTTP/1.1"}' in reply


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    """8000×8000 (the 64-megapixel limit) in 6.5 MB: a tile of noise repeated, which PNG compresses."""
    tile = np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.tile(tile, (40, 40, 1))).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_timed_out_work_holds_its_queue_place_and_stops_within_a_second(impatient_server, huge_png):
    """The overlay of a 64-megapixel image takes about 10 s here; the request limit is 1 s."""
    url = impatient_server.url
    latencies: list[float] = []
    responses: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: responses.append(
            httpx.post(
                f"{url}/predict/",
                files=upload(huge_png, "huge.png", "image/png"),
                params={"format": "overlay"},
                timeout=60,
            )
        )
    )
    sender.start()
    while sender.is_alive():
        latencies.append(health_latency(url))
        time.sleep(0.1)
    answered = time.monotonic()
    assert responses[0].status_code == 503 and "took longer than 1 s" in responses[0].json()["detail"]
    while queue_depth(url) != 0:
        assert time.monotonic() - answered < 1.0, "the work went on more than a second after its request ended"
        time.sleep(0.02)
    assert max(latencies) < HEALTH_LATENCY_SECONDS, latencies
    assert httpx.post(f"{url}/predict/", files=upload(tiff_with_pages(1), "a.tif", "image/tiff")).status_code == 200

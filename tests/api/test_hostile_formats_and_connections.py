"""Hostile input against a real server: formats that reach other programs, containers
that cost quadratic time, headers without limits, hostile EXIF, echoed field names, and work that
outlives its request. Each gets a clear 4xx or a bounded log line, and /health is answered while they run.
Nothing here is timed: work is counted (metrics), and "at once" means "before any inference ran"."""

import io
import json
import select
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

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow

HEADER_TIMEOUT_SECONDS = 2
# Longer than any wait here, so a connection that the server fails to close ends the test instead of hanging it.
HANG_GUARD_SECONDS = 120


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
    """A queue of one, a two-second header limit, and the tripwire; the default request limit, so that a
    busy machine's slow decode is never mistaken for an attack."""
    server = RunningServer(
        environment={"PATH": f"{tripwire}:{Path('/usr/bin')}:{Path('/bin')}"},
        max_queue="1",
        header_timeout_seconds=str(HEADER_TIMEOUT_SECONDS),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def short_limit_server():
    """A three-second request limit: far less than rendering a 64-megapixel overlay takes on any CPU."""
    server = RunningServer(request_timeout_seconds="3", max_queue="1")
    yield server
    server.stop()


def health_answers(url: str) -> bool:
    return httpx.get(f"{url}/health", timeout=HANG_GUARD_SECONDS).status_code == 200


def metric(url: str, name: str) -> float:
    """A metric without labels, as /metrics says it now (0 before its first event)."""
    metrics = httpx.get(f"{url}/metrics", timeout=HANG_GUARD_SECONDS).text
    line = next((line for line in metrics.splitlines() if line.startswith(f"{name} ")), f"{name} 0")
    return float(line.split()[1])


def queue_depth(url: str) -> float:
    return metric(url, "lesionseg_inference_queue_depth")


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


def test_a_tiff_of_100000_pages_is_refused_and_frees_its_place(impatient_server):
    """That it costs no more than a two-page TIFF is counted in tests/imaging/test_decode.py."""
    data = tiff_with_pages(100_000)
    assert len(data) < 7_000_000
    response = httpx.post(
        f"{impatient_server.url}/predict/", files=upload(data, "pages.tif", "image/tiff"), timeout=HANG_GUARD_SECONDS
    )
    assert response.status_code == 415 and "multi-frame" in response.json()["detail"]
    assert queue_depth(impatient_server.url) == 0


def test_sixty_five_thousand_exif_warnings_become_one_bounded_json_log_line(impatient_server, real_image_path):
    lesion = io.BytesIO()
    Image.open(real_image_path).convert("RGB").save(lesion, format="PNG")
    data = png_with_exif_tags(lesion.getvalue(), 65_000)
    log_before = len(impatient_server.read_log())
    response = httpx.post(
        f"{impatient_server.url}/predict/", files=upload(data, "exif.png", "image/png"), timeout=HANG_GUARD_SECONDS
    )
    assert response.status_code == 200
    # The warning is logged before the response is sent; the log is a file the server flushes line by line.
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
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
            for _ in range(megabytes):
                connection.sendall(b"a" * 1_000_000)
        except OSError:
            pass  # the server closed the connection: what we want
        try:
            replies.append(connection.recv(4096))
        except OSError:
            replies.append(b"")


def test_a_100_megabyte_header_is_refused_with_431_and_health_is_still_answered(impatient_server):
    replies: list[bytes] = []
    sender = threading.Thread(target=send_huge_header, args=(impatient_server.port, 100, replies))
    sender.start()
    answers = [health_answers(impatient_server.url) for _ in range(5)]
    sender.join(timeout=HANG_GUARD_SECONDS)
    assert not sender.is_alive()
    assert replies[0].startswith(b"HTTP/1.1 431"), replies[0][:200]
    assert b"request headers are larger than the limit" in replies[0]
    assert all(answers)


def test_headers_sent_one_line_at_a_time_are_cut_off(impatient_server):
    """Each line comes before the header limit has passed, so only a limit on the whole header can stop it;
    the server must answer 408 and close long before the 200 lines (100 s) are sent."""
    lines_sent = 0
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=HANG_GUARD_SECONDS) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            while lines_sent < 200:
                connection.sendall(b"X-Slow: 1\r\n")
                lines_sent += 1
                if select.select([connection], [], [], 0.5)[0]:
                    break  # the server has answered
        except OSError:
            pass
        reply = connection.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert lines_sent < 200, "the server let a header trickle in for 100 s"
    assert health_answers(impatient_server.url)


def test_a_connection_that_sends_nothing_is_closed(impatient_server):
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=HANG_GUARD_SECONDS) as connection:
        reply = connection.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408")


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


def test_timed_out_work_holds_its_queue_place_and_stops_at_its_next_check(short_limit_server, huge_png):
    """The overlay of a 64-megapixel image takes about 10 s on a fast CPU; the request limit is 3 s. Counted,
    not timed: the work must end by cancellation (not by finishing), and /health must be answered while it
    still holds the queue."""
    url = short_limit_server.url
    cancelled_before = metric(url, "lesionseg_cancelled_work_total")
    responses: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: responses.append(
            httpx.post(
                f"{url}/predict/",
                files=upload(huge_png, "huge.png", "image/png"),
                params={"format": "overlay"},
                timeout=HANG_GUARD_SECONDS,
            )
        )
    )
    sender.start()
    health_while_queued = []
    while sender.is_alive():
        queued_before = queue_depth(url)
        answered = health_answers(url)
        health_while_queued.append(answered and queued_before == 1 and queue_depth(url) == 1)
    assert responses[0].status_code == 503 and "took longer than 3 s" in responses[0].json()["detail"]
    while queue_depth(url) != 0:  # the place is freed when the work has stopped, whenever that is
        time.sleep(0.05)
    assert metric(url, "lesionseg_cancelled_work_total") == cancelled_before + 1, "the work ran on after its request"
    assert any(health_while_queued), "/health was never answered while the work held the queue"
    assert httpx.get(f"{url}/ready", timeout=HANG_GUARD_SECONDS).status_code == 200

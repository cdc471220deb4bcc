"""Requests that are not for this service, against a real server: ambiguous framing, a Host it does not answer
to, a cross-site write, a made-up method, headers over the limit in one read, and an unexpected error."""

import os
import socket
import sqlite3
import subprocess
import sys

import httpx
import pytest
from tests.conftest import RunningServer
from tests.reviews.test_cases_http import Service

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow

HANG_GUARD_SECONDS = 120


def exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_SECONDS) as connection:
        connection.sendall(request)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
            if b"\r\n\r\n" in reply and b"}" in reply:
                break
    return reply


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(server_url):
    port = int(server_url.rsplit(":", 1)[1])
    reply = exchange(
        port,
        b"POST /predict/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"both Content-Length and Transfer-Encoding" in reply and b"connection: close" in reply.lower()


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "127.0.0.1.nip.example"])
def test_a_service_on_loopback_answers_only_to_loopback_names(server_url, host):
    """DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1."""
    response = httpx.get(f"{server_url}/info", headers={"Host": host})
    assert response.status_code == 421 and "Host" in response.json()["detail"]
    for name in ("127.0.0.1", "localhost", "[::1]"):
        assert httpx.get(f"{server_url}/health", headers={"Host": f"{name}:1234"}).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1:{port}@evil.example", "localhost:evil", "[::1]evil.example", "a b"])
def test_a_host_that_is_not_a_name_and_a_port_is_refused(server_url, host):
    """Read as a URL's authority: user info, a port that is not digits, or junk after an IPv6 address were
    taken for loopback names."""
    port = int(server_url.rsplit(":", 1)[1])
    reply = exchange(port, f"GET /info HTTP/1.1\r\nHost: {host.format(port=port)}\r\n\r\n".encode())
    assert reply.split(b"\r\n", 1)[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 421 Misdirected Request"), reply
    assert b"Host" in reply


def test_two_host_or_origin_headers_are_refused(server_url):
    """Two Origins, ours first, once passed as ours. Two Hosts are refused by the HTTP parser itself."""
    port = int(server_url.rsplit(":", 1)[1])
    for extra, words in (
        (f"Origin: {server_url}\r\nOrigin: https://evil.example\r\n".encode(), b"more than one Host or Origin"),
        (b"Host: attacker.example\r\n", b"not valid HTTP/1.1"),
    ):
        reply = exchange(port, b"POST /cases HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"Content-Length: 0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400") and words in reply, reply[:300]


def test_a_write_the_browser_calls_cross_site_is_refused_without_an_origin(server_url, real_image_path):
    files = {"file": ("a.jpg", real_image_path.read_bytes(), "image/jpeg")}
    refused = httpx.post(f"{server_url}/predict/", files=files, headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403 and "cross-site" in refused.json()["detail"]
    same = httpx.post(
        f"{server_url}/predict/", files=files, headers={"Sec-Fetch-Site": "same-origin"}, params={"samples": 1}
    )
    assert same.status_code == 200


def test_a_cross_site_form_cannot_write_but_the_page_itself_can(server_url, real_image_path):
    files = {"file": ("a.jpg", real_image_path.read_bytes(), "image/jpeg")}
    foreign = httpx.post(f"{server_url}/predict/", files=files, headers={"Origin": "https://attacker.example"})
    assert foreign.status_code == 403 and "cross-site" in foreign.json()["detail"]
    own = httpx.post(f"{server_url}/predict/", files=files, headers={"Origin": server_url}, params={"samples": 1})
    assert own.status_code == 200
    assert httpx.get(f"{server_url}/health", headers={"Origin": "https://attacker.example"}).status_code == 200


def test_made_up_methods_share_one_metric_series(server_url):
    for index in range(30):
        httpx.request(f"MADEUP{index}", f"{server_url}/health")
    metrics = httpx.get(f"{server_url}/metrics").text
    assert "MADEUP" not in metrics
    assert 'method="other"' in metrics


def test_a_header_over_the_limit_in_one_read_gets_431(server_url):
    port = int(server_url.rsplit(":", 1)[1])
    reply = exchange(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]


def test_an_unexpected_error_is_a_json_500_with_its_request_id_that_says_the_connection_closes(
    tmp_path, real_image_path
):
    """A real fault: the worklist's table is dropped under the running service."""
    database = tmp_path / "cases.db"
    service = Service(f"sqlite:///{database}", tmp_path / "images").start()
    try:
        with sqlite3.connect(database) as connection:
            connection.execute("DROP TABLE reviews")
        response = service.get("/cases")
        assert response.status_code == 500
        request_id = response.headers["x-request-id"]
        assert request_id in response.json()["detail"]
        assert response.headers["connection"] == "close"
        assert "Traceback" not in response.text and "sqlite" not in response.text.lower()
        assert httpx.get(f"{service.url}/health").status_code == 200
        assert request_id in service.server.read_log()
    finally:
        service.stop()


def test_a_server_bound_elsewhere_answers_to_the_names_it_is_given(tmp_path):
    server = RunningServer(allowed_hosts="lesions.example.org")
    try:
        assert httpx.get(f"{server.url}/health", headers={"Host": "lesions.example.org"}).status_code == 200
        assert httpx.get(f"{server.url}/health", headers={"Host": "127.0.0.1"}).status_code == 421
    finally:
        server.stop()


@pytest.mark.parametrize("keys", ["Reader:K", "reviwer:K", "reader:", "same,same", "reader:k,admin:k"])
def test_api_keys_are_parsed_strictly_at_start_up(keys):
    """A mistyped role once made an admin key; a key listed twice kept its last role."""
    started = subprocess.run(
        [sys.executable, "-m", "lesionseg.cli", "serve", "--port", "1"],
        env={**os.environ, "LESIONSEG_API_KEYS": keys},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 2, started.stderr[-2000:]
    assert "key" in started.stderr and "Traceback" not in started.stderr

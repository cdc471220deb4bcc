"""Hostile and broken requests against the real server: each gets a clear 4xx, and it keeps serving."""

import asyncio
import io
import socket
import struct
import zlib

import httpx
import pytest
from PIL import Image
from tests.conftest import RunningServer

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a size its few bytes of data could never fill."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int, real_jpeg: bytes) -> bytes:
    """A real JPEG with its frame header rewritten to claim another size."""
    marker = real_jpeg.index(b"\xff\xc0")
    return real_jpeg[: marker + 5] + struct.pack(">HH", height, width) + real_jpeg[marker + 9 :]


def animated_gif(lesion: Image.Image) -> bytes:
    buffer = io.BytesIO()
    frames = [lesion.resize((64, 64)), lesion.resize((64, 64)).rotate(90)]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def multipage_tiff(lesion: Image.Image) -> bytes:
    buffer = io.BytesIO()
    pages = [lesion.resize((64, 64)), lesion.resize((64, 64))]
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    return buffer.getvalue()


@pytest.fixture(scope="module")
def real_jpeg(real_image_path) -> bytes:
    return real_image_path.read_bytes()


@pytest.fixture(scope="module")
def bad_requests(real_jpeg, real_image_path) -> list[tuple[str, dict, int, str]]:
    """(name, httpx request arguments, expected status, words the reason must contain)."""
    lesion = Image.open(real_image_path).convert("RGB")

    def upload(data: bytes, name: str = "image.jpg", content_type: str = "image/jpeg") -> dict:
        return {"files": {"file": (name, data, content_type)}}

    return [
        ("no body", {}, 400, "no file"),
        ("wrong field name", {"files": {"image": ("a.jpg", real_jpeg, "image/jpeg")}}, 400, "field"),
        (
            "two files",
            {"files": [("file", ("a.jpg", real_jpeg, "image/jpeg")), ("file", ("b.jpg", real_jpeg, "image/jpeg"))]},
            400,
            "one image",
        ),
        (
            "extra field",
            {"files": {"file": ("a.jpg", real_jpeg, "image/jpeg")}, "data": {"note": "x"}},
            400,
            "unexpected form field",
        ),
        (
            "huge form field",
            {"files": {"file": ("a.jpg", real_jpeg, "image/jpeg")}, "data": {"note": "x" * 2_000_000}},
            400,
            "",
        ),
        ("json body", {"json": {"file": "aGVsbG8="}}, 415, "multipart"),
        ("empty file", upload(b""), 400, "empty"),
        ("plain text", upload(b"hello, I am not a picture"), 415, "not an image"),
        (
            "pdf",
            upload(b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "a.pdf", "application/octet-stream"),
            415,
            "not an image",
        ),
        ("zip", upload(b"PK\x03\x04" + bytes(100), "a.zip", "application/octet-stream"), 415, "not an image"),
        (
            "svg",
            upload(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "a.svg", "image/svg+xml"),
            415,
            "not an image",
        ),
        (
            "heic",
            upload(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200), "a.heic", "image/heic"),
            415,
            "not an image",
        ),
        (
            "png signature then html (polyglot)",
            upload(b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>", "a.png", "image/png"),
            415,
            "not an image",
        ),
        ("truncated jpeg", upload(real_jpeg[: len(real_jpeg) // 3]), 400, "truncated"),
        ("truncated png", upload(png_bytes(lesion)[:2000], "a.png", "image/png"), 400, ""),
        ("png claiming 100000x100000", upload(png_claiming(100_000, 100_000), "a.png", "image/png"), 413, "pixels"),
        (
            "png compression bomb",
            upload(png_bytes(Image.new("1", (20_000, 20_000))), "a.png", "image/png"),
            413,
            "pixels",
        ),
        ("jpeg claiming 60000x60000", upload(jpeg_claiming(60_000, 60_000, real_jpeg)), 413, "pixels"),
        ("zero-size png", upload(png_claiming(0, 0), "a.png", "image/png"), 415, "not an image"),
        ("1x1 image", upload(png_bytes(Image.new("RGB", (1, 1))), "a.png", "image/png"), 422, "at least"),
        ("animated gif", upload(animated_gif(lesion), "a.gif", "image/gif"), 415, "multi-frame"),
        ("multi-page tiff", upload(multipage_tiff(lesion), "a.tif", "image/tiff"), 415, "multi-frame"),
        ("wrong content type", upload(real_jpeg, "a.txt", "text/plain"), 415, "content type"),
        ("samples too many", {**upload(real_jpeg), "params": {"samples": 1000}}, 422, ""),
        ("threshold not a number", {**upload(real_jpeg), "params": {"threshold": "nan"}}, 422, ""),
        ("seed too large", {**upload(real_jpeg), "params": {"seed": 2**40}}, 422, ""),
        ("unknown format", {**upload(real_jpeg), "params": {"format": "exe"}}, 422, ""),
    ]


def test_bad_input_matrix_gets_clear_4xx_and_the_service_keeps_serving(client, bad_requests, real_jpeg):
    assert len(bad_requests) >= 25
    for name, arguments, status, words in bad_requests:
        response = client.post("/predict/", **arguments)
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        detail = response.json()["detail"]
        assert detail, name
        assert words in str(detail), (name, detail)
        text = response.text
        assert "Traceback" not in text and "/work/" not in text and ".py" not in text, (name, text)
    assert client.get("/health").status_code == 200
    ok = client.post("/predict/", files={"file": ("a.jpg", real_jpeg, "image/jpeg")})
    assert ok.status_code == 200


def test_non_utf8_file_name_is_just_a_name(server_url, real_jpeg):
    # A valid image under a name that is not UTF-8 is still a valid image.
    boundary = "lesionsegboundary"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="l\xe9sion\xff.jpg"\r\n'
        + b"Content-Type: image/jpeg\r\n\r\n"
        + real_jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = httpx.post(
        f"{server_url}/predict/", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 200


def test_malformed_multipart_is_400(server_url):
    response = httpx.post(
        f"{server_url}/predict/",
        content=b"--nope\r\ngarbage",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert response.status_code == 400
    assert "detail" in response.json()


def test_oversized_body_is_refused_from_content_length_without_reading_it(server_url):
    with socket.create_connection(("127.0.0.1", int(server_url.rsplit(":", 1)[1])), timeout=10) as connection:
        connection.sendall(
            b"POST /predict/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 999999999999\r\n\r\n"
        )
        reply = connection.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply


@pytest.fixture(scope="module")
def strict_server():
    """A second server: API keys on, a queue of 2, a 3-second request limit."""
    server = RunningServer(api_keys="first-key,second-key", max_queue="2", request_timeout_seconds="3")
    yield server
    server.stop()


def test_slow_upload_is_cut_off_with_408(strict_server):
    # The socket's timeout only guards against a hang: the server must answer, whatever the machine's speed.
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=120) as connection:
        connection.sendall(
            b"POST /predict/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: first-key\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n"
        )
        reply = connection.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408"), reply


def test_api_key_is_required_everywhere_but_health(strict_server, real_jpeg):
    url = strict_server.url
    assert httpx.get(f"{url}/health").status_code == 200
    for path in ("/info", "/metrics", "/openapi.json", "/docs"):
        response = httpx.get(f"{url}{path}")
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    files = {"file": ("a.jpg", real_jpeg, "image/jpeg")}
    assert httpx.post(f"{url}/predict/", files=files).status_code == 401
    assert httpx.post(f"{url}/predict/", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.post(f"{url}/predict/", files=files, headers={"X-API-Key": "first-key"}).status_code == 200
    bearer = {"Authorization": "Bearer second-key"}
    assert httpx.post(f"{url}/predict/", files=files, headers=bearer).status_code == 200
    assert httpx.get(f"{url}/info", headers=bearer).status_code == 200


def test_overload_gets_503_with_retry_after_and_recovers_at_once(strict_server, large_jpeg_path):
    data = large_jpeg_path.read_bytes()
    headers = {"X-API-Key": "first-key"}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=strict_server.url, timeout=60, headers=headers) as client:
            requests = [
                client.post("/predict/", files={"file": ("a.jpg", data, "image/jpeg")}, params={"samples": 64})
                for _ in range(12)
            ]
            return await asyncio.gather(*requests)

    responses = asyncio.run(burst())
    statuses = [response.status_code for response in responses]
    assert statuses.count(200) >= 1, statuses
    rejected = [response for response in responses if response.status_code == 503]
    assert rejected, statuses
    assert all(response.headers["retry-after"] for response in rejected)
    assert all("busy" in response.json()["detail"] for response in rejected)
    assert set(statuses) <= {200, 503}
    after = httpx.post(f"{strict_server.url}/predict/", files={"file": ("a.jpg", data, "image/jpeg")}, headers=headers)
    assert after.status_code == 200
    metrics = httpx.get(f"{strict_server.url}/metrics", headers=headers).text
    assert "lesionseg_overload_rejections_total" in metrics

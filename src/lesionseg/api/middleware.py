"""ASGI middleware: request ids, access logs and metrics, auth, body-size and time limits, headers.

Pure ASGI (not BaseHTTPMiddleware), so uploads stream through and are counted as they arrive.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lesionseg.api.errors import RequestRejected
from lesionseg.api.observability import Metrics

logger = logging.getLogger("lesionseg.access")

# Paths anyone may reach: liveness for orchestrators, and the page's static shell (it holds no data;
# everything it shows comes from endpoints that do check the key).
PUBLIC_PATHS = {"/health", "/ready", "/", "/review", "/favicon.ico"}
PUBLIC_PREFIXES = ("/static/",)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# The pages load only their own files; images arrive as data: URLs from our JSON, or as blob: URLs of
# images fetched with the API key.
PAGES = ("/", "/review")
PAGE_POLICY = (
    b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """Request id (taken from X-Request-ID or made), one JSON access log line, metrics, safe headers,
    the header count limit and the per-request time limit."""

    def __init__(self, app: ASGIApp, metrics: Metrics, request_timeout_seconds: float, max_header_count: int) -> None:
        self.app = app
        self.metrics = metrics
        self.request_timeout_seconds = request_timeout_seconds
        self.max_header_count = max_header_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = header(scope, b"x-request-id")
        request_id = supplied if supplied and len(supplied) <= 128 and supplied.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        outcome = {"status": 500, "started": False, "body_done": False}

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                outcome["body_done"] = True
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                outcome["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(SECURITY_HEADERS)
                if (
                    any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers)
                    and scope["path"] in PAGES
                ):
                    headers.append((b"content-security-policy", PAGE_POLICY))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if len(scope["headers"]) > self.max_header_count:
                detail = f"{len(scope['headers'])} request headers; the limit is {self.max_header_count}"
                await send_json(send_with_headers, 431, detail)
                return
            async with asyncio.timeout(self.request_timeout_seconds):
                await self.app(scope, tracked_receive, send_with_headers)
        except TimeoutError:
            if not outcome["started"]:
                if outcome["body_done"]:
                    detail = f"the request took longer than {self.request_timeout_seconds:g} s; try again"
                    await send_json(send_with_headers, 503, detail, [(b"retry-after", b"5")])
                else:
                    detail = f"the upload did not arrive within {self.request_timeout_seconds:g} s"
                    await send_json(send_with_headers, 408, detail)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_name = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route_name, str(outcome["status"])).inc()
            self.metrics.latency.labels(route_name).observe(elapsed)
            logger.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route_name,
                        "status": outcome["status"],
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": (scope.get("client") or ["?"])[0],
                    }
                },
            )


def key_identifier(key: str) -> str:
    """What the records say of a key: enough of its hash to tell keys apart, nothing to reuse."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class ApiKeyMiddleware:
    """401 without a valid key (X-API-Key or Authorization: Bearer) on every non-public path. A valid
    key's role and identifier go into the request's state (`api_role`, `api_key_id`) for the routes."""

    def __init__(self, app: ASGIApp, api_key_roles: dict[str, str]) -> None:
        self.app = app
        self.keys = [(key.encode(), role, key_identifier(key)) for key, role in api_key_roles.items()]

    def identify(self, presented: str | None) -> tuple[str, str] | None:
        """(role, key identifier) of a valid key, else None."""
        if not presented:
            return None
        candidate = presented.encode()
        # Compare with every key, always: the time taken says nothing about which key nearly matched.
        matches = [(hmac.compare_digest(candidate, key), role, identifier) for key, role, identifier in self.keys]
        return next(((role, identifier) for matched, role, identifier in matches if matched), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        presented = header(scope, b"x-api-key")
        authorization = header(scope, b"authorization") or ""
        if not presented and authorization.lower().startswith("bearer "):
            presented = authorization[7:].strip()
        identity = self.identify(presented)
        if identity is not None:
            scope.setdefault("state", {}).update(api_role=identity[0], api_key_id=identity[1])
        if scope["method"] == "OPTIONS" or identity is not None:
            await self.app(scope, receive, send)
            return
        await send_json(
            send,
            401,
            "a valid API key is required: send it as X-API-Key or Authorization: Bearer",
            [(b"www-authenticate", b"Bearer")],
        )


class BodySizeLimitMiddleware:
    """Refuses a body over the limit as it streams in: by Content-Length at once, else while counting."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            await send_json(send, 413, f"the request body is larger than the limit of {self.max_body_bytes} bytes")
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise RequestRejected(
                        413, f"the request body is larger than the limit of {self.max_body_bytes} bytes"
                    )
            return message

        await self.app(scope, counting_receive, send)

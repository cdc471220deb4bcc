"""ASGI middleware, one job each: request ids, access logs and metrics, security headers, the answer to an
unexpected error, refusing requests not meant for this service, the time limit, API keys and the body size.

Pure ASGI (not BaseHTTPMiddleware), so uploads stream through and are counted as they arrive. `create_app`
stacks them in the order their docstrings assume (app.py, `add_middleware`).
"""

import asyncio
import hashlib
import hmac
import json
import logging
import re
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


# Metric labels come from closed sets: a made-up method would otherwise become a series of its own.
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}
UNSAFE_METHODS = {"POST", "PUT", "DELETE", "PATCH"}


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def header_count(scope: Scope, name: bytes) -> int:
    return sum(1 for key, _ in scope.get("headers", []) if key == name)


LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
# A Host header is a URL's authority without its user part (RFC 9110 7.2): a name or an IPv4 address, or an IPv6
# address in brackets, then an optional port of digits. Nothing else: `127.0.0.1:8000@evil.example` (user info),
# `localhost:evil` and `[::1]evil.example` were read as loopback names.
HOST_PATTERN = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?)(?::[0-9]{1,5})?")


def host_name(host: str) -> str | None:
    """The name in a Host header, without its port: `[::1]:8000` -> `[::1]`, `Example.org:80` -> `example.org`;
    None where the header is not a name and an optional port."""
    match = HOST_PATTERN.fullmatch(host.strip().lower())
    return match.group(1) if match else None


def allowed_host_names(allowed_hosts: str, bind_host: str) -> set[str] | None:
    """The Host names a request may carry (None: any). Unset, a service bound to loopback answers only to
    loopback names: a web page elsewhere cannot reach it through a DNS name rebound to 127.0.0.1."""
    names = {host_name(name) or name.strip().lower() for name in allowed_hosts.split(",") if name.strip()}
    if "*" in names:
        return None
    if names:
        return names
    return set(LOOPBACK_NAMES) if bind_host.strip().lower() in LOOPBACK_NAMES else None


class RequestIdMiddleware:
    """Each request's id, taken from X-Request-ID (printable, at most 128 characters) or made, in the request's
    state for the logs and routes, and echoed in the response's X-Request-ID."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = header(scope, b"x-request-id")
        request_id = supplied if supplied and len(supplied) <= 128 and supplied.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(scope: Scope) -> str:
    return scope.get("state", {}).get("request_id", "?")


class AccessLogMiddleware:
    """One JSON access log line and the request metrics for every answer, whoever gave it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts: a request that ends without one counts as failed

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.record(scope, status, time.perf_counter() - started)

    def record(self, scope: Scope, status: int, elapsed: float) -> None:
        route = scope.get("route")
        route_name = getattr(route, "path", None) or "unmatched"
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
        self.metrics.requests.labels(method, route_name, str(status)).inc()
        self.metrics.latency.labels(route_name).observe(elapsed)
        fields = {
            "request_id": request_id(scope),
            "method": scope["method"][:16],
            "path": scope["path"],
            "route": route_name,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "client": (scope.get("client") or ["?"])[0],
        }
        logger.info("request", extra={"fields": fields})


class SecurityHeadersMiddleware:
    """The headers every answer carries (no sniffing, no framing, no referrer), and the pages' content policy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *SECURITY_HEADERS]
                is_html = any(key == b"content-type" and value.startswith(b"text/html") for key, value in headers)
                if is_html and scope["path"] in PAGES:
                    headers.append((b"content-security-policy", PAGE_POLICY))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ResponseTracker:
    """`send`, noting whether the answer has begun: once it has, no other answer can take its place."""

    def __init__(self, send: Send) -> None:
        self.downstream = send
        self.started = False

    async def send(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.downstream(message)


class UnhandledErrorMiddleware:
    """What no handler expected is answered here, inside the request's context, so the 500 carries its request
    id and says that the connection closes, rather than leaving it to the server to drop a kept-alive connection
    unsaid. The details go to the log, never to the client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = ResponseTracker(send)
        try:
            await self.app(scope, receive, response.send)
        except Exception as error:
            logger.error("unhandled error", exc_info=error, extra={"fields": {"request_id": request_id(scope)}})
            if not response.started:
                detail = f"internal error; the server log has the details under request id {request_id(scope)}"
                await send_json(send, 500, detail, [(b"connection", b"close")])


class RequestGuardMiddleware:
    """Requests that are not for this service, refused before any route: too many headers (each costs every
    middleware a scan), an ambiguous body framing (both Content-Length and Transfer-Encoding, which a proxy in
    front may read the other way: request smuggling), a Host not among the allowed names (DNS rebinding), and a
    browser's cross-site write (an Origin that is neither this service nor one of LESIONSEG_CORS_ORIGINS, on
    POST, PUT, PATCH or DELETE: a form on another site posting to a service without keys)."""

    def __init__(
        self, app: ASGIApp, allowed_hosts: set[str] | None, cors_origins: list[str], max_header_count: int
    ) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.cors_origins = {origin.rstrip("/").lower() for origin in cors_origins}
        self.max_header_count = max_header_count

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        if len(scope["headers"]) > self.max_header_count:
            return 431, f"{len(scope['headers'])} request headers; the limit is {self.max_header_count}"
        names = [key for key, _ in scope["headers"]]
        if b"transfer-encoding" in names and b"content-length" in names:
            return 400, "the request has both Content-Length and Transfer-Encoding; send one of them"
        if header_count(scope, b"host") > 1 or header_count(scope, b"origin") > 1:
            return 400, "the request has more than one Host or Origin header; send one of each"
        host = header(scope, b"host") or ""
        name = host_name(host)
        if host and name is None:
            return 400, "the Host header is not a host name with an optional port (such as 127.0.0.1:8000)"
        if self.allowed_hosts is not None and name not in self.allowed_hosts:
            return 421, "this service does not answer to that Host name (LESIONSEG_ALLOWED_HOSTS lists them)"
        if scope["method"] in UNSAFE_METHODS and self.cross_site(scope, host):
            return 403, "cross-site requests may not change anything here (LESIONSEG_CORS_ORIGINS lists origins)"
        return None

    def cross_site(self, scope: Scope, host: str) -> bool:
        """A browser's write from another site: its Origin is neither this service nor a CORS origin, or,
        without an Origin, the browser itself says the request is cross-site (Sec-Fetch-Site)."""
        origin = header(scope, b"origin")
        if origin is None:
            return (header(scope, b"sec-fetch-site") or "").strip().lower() == "cross-site"
        origin = origin.rstrip("/").lower()
        own = {f"{scheme}://{host.strip().lower()}" for scheme in ("http", "https")}
        return origin not in own and origin not in self.cors_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refused := self.refusal(scope)) is not None:
            await send_json(send, refused[0], refused[1], [(b"connection", b"close")])
            return
        await self.app(scope, receive, send)


class TimeLimitMiddleware:
    """Each request's whole time, upload included, within `request_timeout_seconds`: an upload that has not
    arrived by then is answered 408, a request whose work has not finished 503 (try again); an answer already
    begun is cut off, as there is no other way to end it."""

    def __init__(self, app: ASGIApp, request_timeout_seconds: float) -> None:
        self.app = app
        self.request_timeout_seconds = request_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False
        response = ResponseTracker(send)

        async def tracked_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            return message

        try:
            async with asyncio.timeout(self.request_timeout_seconds):
                await self.app(scope, tracked_receive, response.send)
        except TimeoutError:
            if response.started:
                return
            if body_done:
                detail = f"the request took longer than {self.request_timeout_seconds:g} s; try again"
                await send_json(send, 503, detail, [(b"retry-after", b"5")])
            else:
                await send_json(send, 408, f"the upload did not arrive within {self.request_timeout_seconds:g} s")


def key_identifier(key: str, secret: bytes) -> str:
    """What the records say of a key: enough of its HMAC under the server's secret to tell keys apart. Without
    the secret, a reader of the records cannot test guesses of a key against it."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:12]


class ApiKeyMiddleware:
    """401 without a valid key (X-API-Key or Authorization: Bearer) on every non-public path. A valid
    key's role and identifier go into the request's state (`api_role`, `api_key_id`) for the routes."""

    def __init__(self, app: ASGIApp, api_key_roles: dict[str, str], identifier_secret: bytes) -> None:
        self.app = app
        self.keys = [
            (key.encode(), role, key_identifier(key, identifier_secret)) for key, role in api_key_roles.items()
        ]

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
        if path in DOCUMENTATION_PATHS and "text/html" in (header(scope, b"accept") or ""):
            await send_key_needed_page(send)
            return
        await send_json(
            send,
            401,
            "a valid API key is required: send it as X-API-Key or Authorization: Bearer",
            [(b"www-authenticate", b"Bearer")],
        )


# The API's own documentation pages: a person with a browser reaches them, where bare JSON would say nothing.
DOCUMENTATION_PATHS = {"/docs", "/redoc"}
KEY_NEEDED_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lesionseg: an API key is needed</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 42rem; margin: 3rem auto; line-height: 1.5">
<h1>An API key is needed</h1>
<p>This server asks for an API key on everything but its pages. Whoever runs it gives the keys.</p>
<ul>
<li>On the <a href="./">segmentation page</a> and the <a href="review">review worklist</a>, type your key in
the <em>API key</em> field.</li>
<li>From a program, send it in the <code>X-API-Key</code> header (or <code>Authorization: Bearer</code>). The
API's description is at <code>/openapi.json</code> with the same key, for example
<code>curl -H "X-API-Key: $KEY" http://HOST/openapi.json</code>.</li>
</ul>
</body></html>
"""


async def send_key_needed_page(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(KEY_NEEDED_PAGE)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": KEY_NEEDED_PAGE})


class BodySizeLimitMiddleware:
    """Refuses a body over the limit as it streams in: by Content-Length at once, else while counting. Any body
    but a multipart upload (a review's JSON, whatever it claims to be) has a smaller limit: it is parsed whole
    on the event loop."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_json_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_body_bytes = max_json_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = (header(scope, b"content-type") or "").lower().startswith("multipart/form-data")
        limit = self.max_body_bytes if is_upload else self.max_json_body_bytes
        detail = f"the request body is larger than the limit of {limit} bytes"
        declared = header(scope, b"content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            await send_json(send, 413, detail)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestRejected(413, detail)
            return message

        await self.app(scope, counting_receive, send)

"""uvicorn's h11 protocol with limits on what arrives before a request exists: header bytes and time.

uvicorn's default parser (httptools) buffers a header line of any length: one 200 MB line took up to a
minute to parse and stalled every other connection, /health included. h11 counts what it buffers, so
requests are parsed by h11 here, and a request whose headers pass `max_header_bytes` is answered 431
at once. Nothing in uvicorn bounds how long headers may take either: a client that sends one header
line every few seconds, or connects and sends nothing, holds its connection forever. Here the headers
of each request must be complete within `header_timeout_seconds` of its first byte (or of the
connection), or the connection is answered 408 and closed. The header count is limited in
`RequestGuardMiddleware`, once the headers are parsed.
"""

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
# h11's own bound on what it buffers before a request is complete: a backstop above ours, which is
# checked after each read (at most 256 KiB arrive in one).
H11_BUFFER_MARGIN_BYTES = 1024 * 1024


def raw_json_response(status: int, detail: str) -> bytes:
    """A whole response written before h11 saw a request, when h11 itself cannot send one."""
    body = json.dumps({"detail": detail}).encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, REASONS[status], len(body))
        + body
    )


class LimitedH11Protocol(H11Protocol):
    def __init__(self, *arguments, max_header_bytes: int, header_timeout_seconds: float, **keywords) -> None:
        super().__init__(*arguments, **keywords)
        self.max_header_bytes = max_header_bytes
        self.header_timeout_seconds = header_timeout_seconds
        self.header_bytes = 0
        self.header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.start_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_header_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self.start_header_clock()
            # The headers end at the first blank line; counted here, before h11 parses them, because a read
            # that holds all of them (however large) completes the request in one step.
            header_end = data.find(b"\r\n\r\n")
            if header_end >= 0 and self.header_bytes + header_end + 4 > self.max_header_bytes:
                self.refuse(431, f"the request headers are larger than the limit of {self.max_header_bytes} bytes")
                return
            self.header_bytes += len(data)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            # The request line and headers are complete; the body has the request's own time limit.
            self.stop_header_clock()
            self.header_bytes = 0
        elif self.header_bytes > self.max_header_bytes:
            # Checked once h11 has looked: a chunk that also holds the start of the body is not refused.
            self.refuse(431, f"the request headers are larger than the limit of {self.max_header_bytes} bytes")

    def start_header_clock(self) -> None:
        if self.header_deadline is None:
            self.header_deadline = self.loop.call_later(self.header_timeout_seconds, self.headers_too_slow)

    def stop_header_clock(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def on_response_complete(self) -> None:
        # The next request on this connection starts its own clock with its first byte; until then
        # uvicorn's keep-alive timeout governs the idle connection.
        self.stop_header_clock()
        super().on_response_complete()

    def headers_too_slow(self) -> None:
        self.header_deadline = None
        if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            self.refuse(408, f"the request headers did not arrive within {self.header_timeout_seconds:g} s")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP, as JSON like every other error."""
        self.refuse(400, "the request is not valid HTTP/1.1")

    def refuse(self, status: int, detail: str) -> None:
        self.stop_header_clock()
        if not self.transport.is_closing():
            self.transport.write(raw_json_response(status, detail))
            self.transport.close()

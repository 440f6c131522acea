"""One keep-alive HTTP/1.1 connection to an upstream: one request at a time, the response
parsed by httptools (llhttp, the parser uvicorn serves with) as bytes arrive."""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

# Past this much unread response body the socket stops being read, so a client that reads a
# stream slowly slows the upstream down instead of growing the gateway's memory.
MAX_BUFFERED = 256 * 1024
# A kept-alive connection lost this soon after a request went out, with nothing of a response
# back, was closed by the server as the request crossed (its idle timeout): the request never
# reached it, so it may be sent again. Later, the server may have started on it.
RESEND_WINDOW_S = 0.25


class ConnectionLost(Exception):
    """The connection ended before the response did."""

    def __init__(self, resendable: bool) -> None:
        super().__init__("upstream closed the connection")
        self.resendable = resendable  # lost as the request went out, before any response byte


class MalformedResponse(Exception):
    """The upstream's bytes are not an HTTP/1.1 response."""


class Connection(asyncio.Protocol):
    """The socket side (protocol callbacks) and the request side (`send`, `wait`, `take`) of
    one connection. Whoever holds it awaits `wait()`; every event wakes that one waiter."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.error: Exception | None = None
        self.in_use = False  # between `send` and the pool taking it back
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._sent_at = 0.0
        self._reset()

    def _reset(self) -> None:
        if self._paused and self.transport is not None:  # a previous body left unread
            self._paused = False
            self.transport.resume_reading()
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False  # read as the response ends (llhttp forgets it after)
        self.received = False  # any byte of the current response
        self.framed = False  # Content-Length or chunked: an EOF before the end is a cut
        self._interim = False  # parsing a 1xx response, which ends before the real one
        self.body: list[bytes] = []
        self.buffered = 0

    # The request side.

    def send(self, data: bytes) -> None:
        """Start a request (head and body in one write: one syscall, one segment if it fits)."""
        self._reset()
        self.in_use = True
        if self.transport is None or self.closed or self.transport.is_closing():
            self.error = ConnectionLost(resendable=True)
            return
        self._sent_at = self.loop.time()
        self.transport.write(data)

    async def wait(self, timeout: float) -> None:
        """Until the next event (headers, body, end, error), or TimeoutError after `timeout` s."""
        waiter = self.loop.create_future()
        self._waiter = waiter
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def take(self) -> bytes:
        """The body bytes received since the last call."""
        if len(self.body) == 1:
            data = self.body[0]
        else:
            data = b"".join(self.body)
        self.body = []
        self.buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        # All of the request written, too: a server may answer before reading all of it.
        return (self.complete and self.keep_alive and not self.closed and self.error is None
                and self.transport is not None and not self.transport.get_write_buffer_size())

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # The socket side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.in_use:  # bytes nobody asked for: the connection cannot be trusted again
            self.abort()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.complete:  # bytes past a whole response only cost the connection
                self.error = MalformedResponse(str(exc))
            self.abort()
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self.error is not None:
            pass
        elif exc is None and self.headers_done and not self.framed:
            self.complete = True  # a body delimited by the end of the connection has ended
        else:
            soon = self.loop.time() - self._sent_at < RESEND_WINDOW_S
            self.error = ConnectionLost(resendable=soon and not self.received)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # httptools' callbacks.

    def on_message_begin(self) -> None:
        if self.complete:  # a second response to one request: stop parsing (data_received)
            raise MalformedResponse("bytes after the end of the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: interim, the response follows
            self.raw_headers = []
            self.framed = False
            self._interim = True
            return
        self.status = status
        self.headers_done = True
        if self.status in (204, 304):
            self.framed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > MAX_BUFFERED and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())

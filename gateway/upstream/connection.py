"""One keep-alive HTTP/1.1 connection to an upstream: one request at a time, the response
parsed by httptools (llhttp, the parser uvicorn serves with) as bytes arrive."""

from __future__ import annotations

import asyncio
import select
from typing import cast

import httptools

# Past this much unread response body the socket stops being read, so a client that reads a
# stream slowly slows the upstream down instead of growing the gateway's memory.
MAX_BUFFERED = 256 * 1024
# 100 Continue, 103 Early Hints: a response has one or two; more is a server gone wrong.
MAX_INTERIM_RESPONSES = 8
# Chunk-size lines and CRLFs between body bytes: what may come without a body beyond the trailers.
TRAILER_SLACK = 4096


class ConnectionLost(Exception):
    """The connection ended before the response did."""

    def __init__(self, resendable: bool) -> None:
        super().__init__("upstream closed the connection")
        # Provably unsent: the connection was found closed before the request was written, or
        # the write itself failed. Anything else may have reached the provider.
        self.resendable = resendable


class MalformedResponse(Exception):
    """The upstream's bytes are not an HTTP/1.1 response."""


class HeadersTooLarge(Exception):
    """The response's status line and headers (interim responses included) passed the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response headers larger than {limit} bytes")
        self.limit = limit


class Connection(asyncio.Protocol):
    """The socket side (protocol callbacks) and the request side (`send`, `wait`, `take`) of
    one connection. Whoever holds it awaits `wait()`; every event wakes that one waiter."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_header_bytes: int) -> None:
        self.loop = loop
        self.max_header_bytes = max_header_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.error: Exception | None = None
        self.in_use = False  # between `send` and the pool taking it back
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._poll: select.poll | None = None
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
        self.framed = False  # Content-Length or chunked: an EOF before the end is a cut
        self._interim = False  # parsing a 1xx response, which ends before the real one
        self._interims = 0
        self._head_bytes = 0  # received before the final response's headers ended
        self._header_size = 0  # the headers' (then the trailers') own bytes, as parsed
        self._unread_bytes = 0  # received since the last body bytes, once the headers ended
        self.body: list[bytes] = []
        self.buffered = 0

    # The request side.

    def send(self, data: bytes) -> None:
        """Start a request (head and body in one write: one syscall, one segment if it fits)."""
        self._reset()
        self.in_use = True
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            self.error = ConnectionLost(resendable=True)
            return
        transport.write(data)
        if transport.is_closing():  # the write itself failed (EPIPE, ECONNRESET): nothing went
            self.error = ConnectionLost(resendable=True)

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

    def still_open(self, check_socket: bool) -> bool:
        """For an idle connection about to be reused: False when the server has closed it, or
        sent anything unasked. With `check_socket`, as seen on the socket itself: the loop may
        not have read a FIN that just arrived (urllib3 and httpcore poll idle sockets too)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        return not check_socket or self._poll is None or not self._poll.poll(0)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def discard(self) -> None:
        """Closed for good by its pool: the unread body goes, and the error too (raised, it
        holds a traceback whose frames hold this connection: a cycle only the GC would free)."""
        self.abort()
        self.body = []
        self.buffered = 0
        self.error = None

    # The socket side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and hasattr(select, "poll"):
            self._poll = select.poll()  # poll, not select: descriptors pass 1024 under load
            self._poll.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        if not self.in_use:  # bytes nobody asked for: the connection cannot be trusted again
            self.abort()
            return
        if self.headers_done:
            self._unread_bytes += len(data)  # a body resets it (on_body): trailers do not
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.complete and self.error is None:  # bytes past a whole response only
                self.error = MalformedResponse(str(exc))  # cost the connection
            self.abort()
            self._wake()
            return
        if self.closed or self.complete:
            return
        if not self.headers_done:
            # httptools keeps a header until it ends: an endless one must be cut here.
            self._head_bytes += len(data)
            too_many = self._head_bytes > self.max_header_bytes
        else:  # after the headers, bytes that bring no body: trailers, which no limit held
            too_many = self._unread_bytes > self.max_header_bytes + TRAILER_SLACK
        if too_many:
            self.error = HeadersTooLarge(self.max_header_bytes)
            self.abort()
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self.error is not None:
            pass
        elif exc is None and self.headers_done and not self.framed:
            self.complete = True  # a body delimited by the end of the connection has ended
        else:
            # The request was written: the provider may have read it, and may bill it.
            self.error = ConnectionLost(resendable=False)
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
        self._header_size += len(name) + len(value) + 4
        if self._header_size > self.max_header_bytes:  # whole headers (or trailers) in one read
            self.error = HeadersTooLarge(self.max_header_bytes)
            raise self.error  # stops the parser; data_received drops the connection
        if self.headers_done:
            return  # a trailer: nothing here reads them
        self.raw_headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: interim, the response follows
            self._interims += 1
            if self._interims > MAX_INTERIM_RESPONSES:
                self.error = MalformedResponse(f"more than {MAX_INTERIM_RESPONSES} interim responses")
                raise self.error  # stops the parser; data_received drops the connection
            self.raw_headers = []
            self._header_size = 0
            self.framed = False
            self._interim = True
            return
        self.status = status
        self.headers_done = True
        if self.status in (204, 304):
            self.framed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._unread_bytes = 0
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

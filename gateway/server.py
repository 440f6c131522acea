"""The uvicorn server the gateway runs on, with inbound limits enforced while a request is read.

uvicorn's httptools protocol reads a request head in full before anything sees it: no cap on
its size or its number of headers, and no clock on a client that sends it slowly (and none on a
body either). `GuardedHttpToolsProtocol` adds them in the protocol itself, where the bytes
arrive: the head's size and header count (431 and close), the time to receive a head and a
body (a slow client is dropped, with a log line and `gateway_slow_clients_dropped_total`), and
a cap on open connections (503 beyond it). uvicorn's h11 protocol would cap a head's size, but
nothing else here, and it parses in pure Python: about 5x httptools' CPU per request.

`server_settings` is the one place the server is configured: `serve` (any number of workers)
and the tests' servers both use it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from dataclasses import dataclass
from time import monotonic  # the loops' clock, read here without a method call
from typing import Any, Protocol, cast

from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.apis import error_body_for
from gateway.config import Config
from gateway.errors import GatewayError, HeadersTooLarge, Overloaded, RequestTimeout
from gateway.http import REFUSED, respond
from gateway.metrics import SERVER_METRICS
from gateway.types import Receive, Scope, Send

logger = logging.getLogger("gateway.server")
HEAD, BODY = "head", "body"
# After refusing a request, keep reading (and discarding) a little while before closing, so
# that the client reads the refusal instead of a reset for the bytes it was still sending.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
# Served past server.max_connections too: a full pod is alive, and a liveness probe that failed
# would get it restarted with its streams. (/readyz is refused: a full pod is not ready for more.)
PROBES = frozenset({"/healthz"})


class InboundEvents(Protocol):
    """Where connections report what the app never sees (gateway.metrics.Metrics)."""

    def slow_client(self, phase: str) -> None: ...

    def refused(self, reason: str) -> None: ...


@dataclass(frozen=True)
class InboundLimits:
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    head_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 4096  # in this process

    @classmethod
    def from_config(cls, config: Config, workers: int = 1) -> InboundLimits:
        limits = config.limits
        return cls(
            max_head_bytes=limits.max_header_bytes,
            max_headers=limits.max_header_count,
            head_timeout=limits.header_timeout_seconds,
            body_timeout=limits.body_timeout_seconds,
            # The cap is the replica's: its worker processes share it.
            max_connections=math.ceil(config.server.max_connections / max(workers, 1)),
        )


def server_settings(config: Config, workers: int = 1, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config`; `overrides` win."""
    limits = InboundLimits.from_config(config, workers)
    settings: dict[str, Any] = {
        "host": config.server.host,
        "port": config.server.port,
        "workers": workers,
        "loop": "uvloop",
        # A partial of a module-level class pickles, so `--workers N` processes get it too.
        "http": functools.partial(GuardedHttpToolsProtocol, limits=limits),
        "lifespan": "on",
        "access_log": False,  # the gateway writes its own access line (gateway/logs.py)
        "proxy_headers": False,  # nothing here reads the client address; skip parsing X-Forwarded-*
        "timeout_graceful_shutdown": config.server.drain_timeout_seconds,
    }
    settings.update(overrides)
    return settings


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with inbound limits (see the module docstring).

    One timer per connection, armed lazily: a phase sets a deadline (a float), and the timer,
    when it fires, either drops the client or re-arms for the current deadline. So a request
    costs two clock reads, not two timers armed and cancelled."""

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: InboundLimits = InboundLimits(),
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.max_head_bytes = limits.max_head_bytes
        self.max_headers = limits.max_headers
        self.head_timeout = limits.head_timeout
        self.body_timeout = limits.body_timeout
        self.reading_head = True
        self.head_bytes = 0
        self.refusal: GatewayError | None = None  # set once: the connection is closing
        self.phase = HEAD
        self.deadline: float | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.discarded = 0
        self.complete_headers: list[tuple[bytes, bytes]] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.served_app, self.app = self.app, self.over_capacity  # this connection's requests only
        self.expect(HEAD, self.head_timeout)  # a connection that never sends a head too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        super().connection_lost(exc)

    # The methods below run on every request: they call uvicorn's through the class (cheaper than
    # super()) and read the limits from plain attributes.
    def data_received(self, data: bytes) -> None:
        if self.refusal is not None:  # lingering after a refusal: discard
            self.discarded += len(data)
            if self.discarded > LINGER_BYTES:
                self.transport.close()
            return
        if self.reading_head:
            if self.deadline is None:  # the first bytes of the next request on a kept-alive connection
                self.phase = HEAD  # self.expect(HEAD, ...), inline
                self.deadline = monotonic() + self.head_timeout
                if self.watchdog is None:
                    self.watchdog = self.loop.call_later(self.head_timeout, self.check_deadline)
            self.head_bytes += len(data)
        HttpToolsProtocol.data_received(self, data)
        if not self.reading_head or self.refusal is not None:
            return
        if self.head_bytes > self.max_head_bytes:
            self.refuse(HeadersTooLarge(
                f"request head is larger than {self.max_head_bytes} bytes", code="headers_too_large"))
        elif self.headers is not self.complete_headers and len(self.headers) > self.max_headers:
            self.refuse(self.too_many_headers_error())  # an unfinished head's

    # Parser callbacks. Headers are counted per request and per read, not per header: one len()
    # instead of a Python call per header on every request (a head's bytes are capped anyway).
    def on_headers_complete(self) -> None:
        # A head that came whole in one read is past the cap only if that read was (it may
        # hold body bytes too): then it is measured, else nothing is spent on it.
        too_large = self.head_bytes > self.max_head_bytes and self.head_size() > self.max_head_bytes
        self.reading_head = False
        self.head_bytes = 0
        self.complete_headers = self.headers  # counted here; a new head starts a new list
        self.phase = BODY  # self.expect(BODY, ...), inline
        self.deadline = monotonic() + self.body_timeout
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(self.body_timeout, self.check_deadline)
        earlier = self.cycle
        if len(self.headers) > self.max_headers or too_large:
            app, self.app = self.app, self.head_too_large if too_large else self.too_many_headers
            HttpToolsProtocol.on_headers_complete(self)  # for this request only
            self.app = app
        else:
            HttpToolsProtocol.on_headers_complete(self)
        if self.pipeline and earlier is not None:
            # Queued behind an earlier response, with reading paused: its body clock starts
            # when its turn comes, that is when the earlier response completes.
            self.deadline = None
            earlier.on_response = self.next_turn

    def on_message_complete(self) -> None:
        self.reading_head = True
        self.deadline = None  # idle until the next request's first byte (keep-alive timeout)
        HttpToolsProtocol.on_message_complete(self)

    def next_turn(self) -> None:
        self.on_response_complete()  # starts the queued request
        if not self.reading_head and self.refusal is None:
            self.expect(BODY, self.body_timeout)

    def handle_websocket_upgrade(self) -> None:
        self.deadline = None  # the websocket protocol owns the connection from here
        super().handle_websocket_upgrade()

    # Deadlines
    def expect(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.deadline = monotonic() + seconds
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(seconds, self.check_deadline)

    def check_deadline(self) -> None:
        self.watchdog = None
        if self.deadline is None or self.transport.is_closing():
            return
        remaining = self.deadline - monotonic()
        if remaining > 0:
            self.watchdog = self.loop.call_later(remaining, self.check_deadline)
            return
        phase = self.phase
        seconds = self.head_timeout if phase == HEAD else self.body_timeout
        events = self.events()
        if events is not None:
            events.slow_client(phase)
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        logger.warning(
            "dropped a slow client: no complete request %s within %g s", phase, seconds,
            extra={"fields": {"phase": phase, "peer": peer}},
        )
        # A connection that never sent a byte gets no answer: there is no request to answer.
        answer = phase == BODY or self.head_bytes > 0
        self.refuse(RequestTimeout(f"request {phase} not received within {seconds:g} s",
                                   code="request_timeout"), answer=answer, count=False)

    # Refusing
    def refuse(self, error: GatewayError, answer: bool = True, count: bool = True) -> None:
        """Answer `error` if no other response is on the wire, then close (after a linger)."""
        if count and error.code is not None:
            events = self.events()
            if events is not None:
                events.refused(error.code)
        self.refusal = error
        self.deadline = None
        self.headers = []  # an unfinished head's, kept no longer
        answer = answer and self.may_answer()
        if answer and not self.reading_head and self.cycle is not None:
            scope = cast(dict[str, Any], self.cycle.scope)
            scope[REFUSED] = error  # what the app records (read_body raises it)
            self.cycle.disconnected = True  # this request's app: its reads end now, its replies go nowhere
            self.cycle.message_event.set()
        if not answer or self.transport.is_closing():
            self.transport.close()
            return
        self.transport.write(self.response_bytes(error))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def may_answer(self) -> bool:
        """Whether a response of ours can go on the wire without mixing with the app's."""
        cycle = self.cycle
        if cycle is None:  # the connection's first head
            return True
        if self.reading_head:  # the next request's head: the last response must be done
            return bool(cycle.response_complete)
        # this request's body (its cycle is the latest): not queued, and not answered yet
        return not self.pipeline and not cycle.response_started

    def response_bytes(self, error: GatewayError) -> bytes:
        body = error_body_for(getattr(self, "url", b""), error)  # the request line's target, if read
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        return b"".join([*head, body])

    def events(self) -> InboundEvents | None:
        events: InboundEvents | None = self.app_state.get(SERVER_METRICS)
        return events

    def head_size(self) -> int:
        """The request head's bytes: request line, headers and the blank line."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    async def head_too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app for a request whose head, come whole in one read, is past the cap."""
        events = self.events()
        if events is not None:
            events.refused("headers_too_large")
        error = HeadersTooLarge(f"request head is larger than {self.max_head_bytes} bytes",
                                code="headers_too_large")
        await respond(send, error.status, error_body_for(scope["path"], error), [(b"connection", b"close")])

    def too_many_headers_error(self) -> HeadersTooLarge:
        return HeadersTooLarge(f"request has more than {self.max_headers} headers", code="too_many_headers")

    async def too_many_headers(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app for a request whose head, complete, has too many headers."""
        events = self.events()
        if events is not None:
            events.refused("too_many_headers")
        error = self.too_many_headers_error()
        await respond(send, error.status, error_body_for(scope["path"], error), [(b"connection", b"close")])

    async def over_capacity(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in PROBES:  # a full pod is alive: the kubelet must not restart it for that
            await self.served_app(scope, receive, send)
            return
        events = self.events()
        if events is not None:
            events.refused("too_many_connections")
        error = Overloaded(
            f"this replica has its maximum of {self.limits.max_connections} connections open; "
            "retry shortly", code="too_many_connections", headers={"retry-after": "1"})
        await respond(send, error.status, error_body_for(scope["path"], error),
                      [*error.header_pairs(), (b"connection", b"close")])

"""The upstream HTTP client: keep-alive HTTP/1.1 over asyncio, plain or TLS.

It is the gateway's own because the client is much of a proxy's cost: alone on one core,
aiohttp's spends 55 us of CPU per small POST, this one 14 us (loadtest/clients.py; README,
"The upstream client"). Failures are mapped once, here, to `UpstreamError`s.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

from gateway.config import UpstreamConfig
from gateway.errors import BadGateway, GatewayTimeout, ServiceUnavailable, UpstreamError
from gateway.upstream.connection import Connection, ConnectionLost, MalformedResponse
from gateway.upstream.pool import Origin, Pool

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Target:
    """A URL taken apart once: where to connect and what the request line says."""

    origin: Origin
    host: str  # the Host header
    path: str  # path and query

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if port != DEFAULT_PORTS[parts.scheme]:
            host = f"{host}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls((parts.scheme, parts.hostname, port), host, path)


def request_bytes(target: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    # identity: bodies pass through to clients and are scanned for usage, so never compressed
    head = [f"POST {target.path} HTTP/1.1\r\nhost: {target.host}\r\ncontent-length: {len(body)}"
            "\r\naccept-encoding: identity\r\n"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            # never the value in the message: it is usually a key
            raise BadGateway(f"upstream header {name!r} has a line break in its value", reason="config")
        head.append(f"{name}: {value}\r\n")
    head.append("\r\n")
    try:
        return "".join(head).encode("latin-1") + body
    except UnicodeEncodeError:
        pass  # raised outside this block: the encode error's context would hold a key
    raise BadGateway("upstream headers must be latin-1 text", reason="config")


class UpstreamResponse:
    """An open response: status and headers (names lower-case) are known; the body is read or
    streamed once. Closing it before the end drops the connection (a half-read response must
    not go back to the pool); a response read to the end returns it."""

    __slots__ = ("_client", "_connection", "_deadline", "_origin", "_pool", "_released", "headers",
                 "status")

    def __init__(self, client: UpstreamClient, pool: Pool, connection: Connection, origin: Origin,
                 deadline: float) -> None:
        self._client = client
        self._pool = pool
        self._connection = connection
        self._origin = origin
        self._deadline = deadline
        self._released = False
        self.status = connection.status
        self.headers: Mapping[str, str] = _headers(connection.raw_headers)

    async def read(self) -> bytes:
        parts: list[bytes] = []
        try:
            while (part := await self._next()) is not None:
                parts.append(part)
        except Exception as exc:
            raise map_exception(exc) from exc
        finally:
            self.close()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Bytes as they arrive (never re-buffered into lines or events)."""
        try:
            while (part := await self._next()) is not None:
                yield part
        except Exception as exc:
            raise map_exception(exc) from exc
        finally:
            self.close()  # to the pool when read to the end, else dropped

    async def _next(self) -> bytes | None:
        """The body bytes received since the last call, waiting for some; None at the end. A
        response that ended cleanly counts as ended whatever the connection did after."""
        connection = self._connection
        while True:
            if connection.body:
                return connection.take()  # taking resumes a socket paused when full
            if connection.complete:
                return None
            if connection.error is not None:
                raise connection.error
            await connection.wait(self._client.wait_timeout(self._deadline))

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._origin, self._connection)

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class UpstreamClient:
    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._connect_timeout = config.connect_timeout_ms / 1000
        # Between any two reads, the first byte included: a stalled upstream is cut here.
        self._read_timeout = config.first_byte_timeout_ms / 1000
        self._total_timeout = config.total_timeout_ms / 1000
        self._pool: Pool | None = None
        self._tls: ssl.SSLContext | None = None
        self._targets: dict[str, Target] = {}

    async def open(self) -> None:
        self._pool = Pool(self.config.max_connections)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        """Send a request and wait for the status line and headers."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("UpstreamClient used before open()")
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = Target.parse(url)
        data = request_bytes(target, headers, body)
        deadline = asyncio.get_running_loop().time() + self._total_timeout
        resent = False
        while True:
            try:
                connection, reused = await pool.acquire(
                    target.origin, lambda: self._connect(target, deadline), deadline)
            except Exception as exc:
                raise map_exception(exc) from exc
            connection.send(data)
            try:
                while not connection.headers_done:
                    if connection.error is not None:
                        raise connection.error
                    await connection.wait(self.wait_timeout(deadline))
            except BaseException as exc:
                pool.release(target.origin, connection)  # not read to the end: closed
                # A kept-alive connection the server closed as the request went out: nothing
                # reached it, so the request goes once more, on a new connection.
                if isinstance(exc, ConnectionLost) and exc.resendable and reused and not resent:
                    resent = True
                    continue
                if isinstance(exc, Exception):
                    raise map_exception(exc) from exc
                raise
            return UpstreamResponse(self, pool, connection, target.origin, deadline)

    def wait_timeout(self, deadline: float) -> float:
        return max(0.0, min(self._read_timeout, deadline - asyncio.get_running_loop().time()))

    async def _connect(self, target: Target, deadline: float) -> Connection:
        loop = asyncio.get_running_loop()
        scheme, host, port = target.origin
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        timeout = min(self._connect_timeout, max(0.0, deadline - loop.time()))
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(loop), host, port, ssl=tls)
        except TimeoutError:
            raise ServiceUnavailable("upstream unreachable: connect timed out", reason="connect") from None
        except OSError as exc:  # refused, unknown host, TLS handshake (ssl.SSLError is an OSError)
            kind = "TLS handshake failed" if isinstance(exc, ssl.SSLError) else "connection failed"
            raise ServiceUnavailable(f"upstream unreachable: {kind}", reason="connect") from None
        return connection


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def map_exception(exc: BaseException) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return GatewayTimeout("upstream timed out", reason="timeout")
    if isinstance(exc, ConnectionLost):
        return BadGateway("upstream closed the connection", reason="reset")
    if isinstance(exc, MalformedResponse):
        return BadGateway("upstream sent a malformed HTTP response", reason="bad_response")
    if isinstance(exc, OSError):
        return BadGateway(f"upstream request failed: {type(exc).__name__}", reason="reset")
    raise exc

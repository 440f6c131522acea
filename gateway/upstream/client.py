"""The upstream HTTP client: keep-alive HTTP/1.1 over asyncio, plain or TLS, direct or through
an egress proxy, with a library's limits (body, headers, error bodies, pool waits).

It is the gateway's own because the client is much of a proxy's cost (the figures are in
docs/performance.md, measured by loadtest/clients.py). Failures are mapped once, here, to
`UpstreamError`s.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType
from urllib.parse import urlsplit

from gateway.config import UpstreamConfig
from gateway.errors import BadGateway, GatewayTimeout, ServiceUnavailable, UpstreamError
from gateway.upstream.connection import Connection, ConnectionLost, HeadersTooLarge, MalformedResponse
from gateway.upstream.pool import Origin, Pool
from gateway.upstream.proxy import Proxies, Proxy, open_tunnel

DEFAULT_PORTS = {"http": 80, "https": 443}


def user_agent() -> str:
    try:
        version = metadata.version("affinity-gateway")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"affinity-gateway/{version}"


@dataclass(frozen=True, slots=True)
class Target:
    """A URL taken apart once: where to connect, through which proxy, and the request's fixed
    head (request line, host, user-agent, ...)."""

    origin: Origin
    head: str
    proxy: Proxy | None
    tunnel: bool  # TLS through the proxy's CONNECT tunnel (else plain HTTP in absolute form)

    @classmethod
    def parse(cls, url: str, proxies: Proxies, agent: str, method: str = "POST") -> Target:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if port != DEFAULT_PORTS[parts.scheme]:
            host = f"{host}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = proxies.for_target(parts.scheme, parts.hostname, port)
        tunnel = proxy is not None and parts.scheme == "https"
        extra = ""
        if proxy is not None and not tunnel:
            path = f"http://{host}{path}"  # absolute form: the proxy forwards it
            if proxy.authorization:
                extra = f"proxy-authorization: {proxy.authorization}\r\n"
        # identity: bodies pass through to clients and are scanned for usage, so never compressed
        head = (f"{method} {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: {agent}\r\n"
                f"accept-encoding: identity\r\n{extra}")
        return cls((parts.scheme, parts.hostname, port), head, proxy, tunnel)


def request_bytes(target: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    # Canonical case: some proxies (proxy.py) match it case-sensitively and add a second one.
    head = [target.head, f"Content-Length: {len(body)}\r\n"]
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
        """The whole body; a 502 past `upstream.max_response_bytes`."""
        limit = self._client.config.max_response_bytes
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            self.close()
            raise body_too_large(limit)
        parts: list[bytes] = []
        size = 0
        try:
            while (part := await self._next()) is not None:
                size += len(part)
                if size > limit:
                    raise body_too_large(limit)
                parts.append(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        except Exception as exc:
            parts.clear()  # a traceback keeps this frame: it must not keep the body too
            raise map_exception(exc) from exc
        finally:
            self.close()

    async def read_some(self, limit: int) -> bytes:
        """At most `limit` bytes of the body (an error's message); a longer body is not read on:
        its connection is dropped, not drained."""
        parts: list[bytes] = []
        size = 0
        try:
            while size < limit and (part := await self._next()) is not None:
                parts.append(part)
                size += len(part)
            return b"".join(parts)[:limit]
        except Exception as exc:
            parts.clear()
            raise map_exception(exc) from exc
        finally:
            self.close()

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
            await self._client.wait(connection, self._client.read_timeout, self._deadline)

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
        self._first_byte_timeout = config.first_byte_timeout_ms / 1000
        self.read_timeout = config.read_timeout_ms / 1000  # the longest silence inside a body
        self._total_timeout = config.total_timeout_ms / 1000
        self._pool: Pool | None = None
        self._tls: ssl.SSLContext | None = None
        self._targets: dict[str, Target] = {}
        self._proxies = Proxies(config.proxy)
        self._agent = user_agent()

    async def open(self) -> None:
        self._pool = Pool(self.config.max_connections, self.config.pool_timeout_ms / 1000)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        """Send a POST and wait for the status line and headers."""
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = Target.parse(url, self._proxies, self._agent)
        return await self._send(target, request_bytes(target, headers, body))

    async def request(self, method: str, url: str, headers: Mapping[str, str]) -> UpstreamResponse:
        """Send a request without a body (a DELETE of what a provider stores): the same pools,
        limits and resend rule as `post`; its targets are not cached (such calls are rare)."""
        target = Target.parse(url, self._proxies, self._agent, method)
        return await self._send(target, request_bytes(target, headers, b""))

    async def _send(self, target: Target, data: bytes) -> UpstreamResponse:
        pool = self._pool
        if pool is None:
            raise RuntimeError("UpstreamClient used before open()")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_timeout
        resent = False
        while True:
            try:
                connection, reused = await pool.acquire(
                    target.origin, lambda: self._connect(target, deadline), deadline)
            except Exception as exc:
                raise map_exception(exc) from exc
            connection.send(data)
            first_byte = min(deadline, loop.time() + self._first_byte_timeout)
            try:
                while not connection.headers_done:
                    if connection.error is not None:
                        raise connection.error
                    await self.wait(connection, first_byte - loop.time(), deadline, "first_byte")
            except BaseException as exc:
                pool.release(target.origin, connection)  # not read to the end: closed
                # Found closed before the request was written: nothing reached the provider, so
                # it goes once more, on a new connection. Anything else may have been read.
                if isinstance(exc, ConnectionLost) and exc.resendable and reused and not resent:
                    resent = True
                    continue
                if isinstance(exc, Exception):
                    raise map_exception(exc) from exc
                raise
            return UpstreamResponse(self, pool, connection, target.origin, deadline)

    async def wait(self, connection: Connection, silence: float, deadline: float,
                   waiting_for: str = "read") -> None:
        """The connection's next event; a 504 naming the timeout that ran out first."""
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            await connection.wait(max(0.0, min(silence, remaining)))
        except TimeoutError:
            if remaining <= silence:
                key = "total_timeout_ms"
            else:
                key = "first_byte_timeout_ms" if waiting_for == "first_byte" else "read_timeout_ms"
            raise GatewayTimeout(f"upstream timed out (upstream.{key})", reason="timeout") from None

    async def _connect(self, target: Target, deadline: float) -> Connection:
        loop = asyncio.get_running_loop()
        scheme, host, port = target.origin
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        timeout = min(self._connect_timeout, max(0.0, deadline - loop.time()))
        max_header = self.config.max_header_bytes
        proxy = target.proxy
        try:
            async with asyncio.timeout(timeout):
                if proxy is None:
                    _, connection = await loop.create_connection(
                        lambda: Connection(loop, max_header), host, port, ssl=tls)
                elif not target.tunnel:
                    _, connection = await loop.create_connection(
                        lambda: Connection(loop, max_header), proxy.host, proxy.port)
                else:
                    assert tls is not None  # tunnels are made for https targets only
                    raw = await open_tunnel(loop, proxy, host, port)
                    connection = Connection(loop, max_header)
                    try:
                        secured = await loop.start_tls(raw, connection, tls, server_hostname=host)
                    except BaseException:
                        raw.abort()
                        raise
                    if secured is None:  # typeshed allows it; it happens only on a closed loop
                        raise ConnectionError("TLS over the tunnel did not start")
                    connection.connection_made(secured)
        except TimeoutError:
            where = proxy.name if proxy is not None else "upstream"
            raise ServiceUnavailable(f"{where} unreachable: connect timed out", reason="connect") from None
        except OSError as exc:  # refused, unknown host, TLS handshake (ssl.SSLError is an OSError)
            kind = "TLS handshake failed" if isinstance(exc, ssl.SSLError) else "connection failed"
            where = proxy.name if proxy is not None and not target.tunnel else "upstream"
            raise ServiceUnavailable(f"{where} unreachable: {kind}", reason="connect") from None
        return connection


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def body_too_large(limit: int) -> BadGateway:
    return BadGateway(f"upstream response body is larger than upstream.max_response_bytes ({limit} bytes)",
                      reason="too_large", code="upstream_response_too_large")


def map_exception(exc: BaseException) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return GatewayTimeout("upstream timed out", reason="timeout")
    if isinstance(exc, ConnectionLost):
        return BadGateway("upstream closed the connection", reason="reset")
    if isinstance(exc, HeadersTooLarge):
        return BadGateway(
            f"upstream response headers are larger than upstream.max_header_bytes ({exc.limit} bytes)",
            reason="too_large", code="upstream_response_too_large")
    if isinstance(exc, MalformedResponse):
        return BadGateway("upstream sent a malformed HTTP response", reason="bad_response")
    if isinstance(exc, OSError):
        return BadGateway(f"upstream request failed: {type(exc).__name__}", reason="reset")
    raise exc

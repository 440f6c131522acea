"""The upstream HTTP client: the only module that knows aiohttp is underneath.

aiohttp is the client because it is several times faster than httpx here (see README,
"Why aiohttp"). Library exceptions are mapped once, at this boundary, to `UpstreamError`s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

import aiohttp

from gateway.config import UpstreamConfig
from gateway.errors import BadGateway, GatewayTimeout, ServiceUnavailable, UpstreamError


class UpstreamResponse:
    """An open response: status and headers are known; the body is read or streamed once."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except Exception as exc:
            raise map_exception(exc) from exc
        finally:
            self._response.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Bytes as they arrive (never re-buffered into lines or events)."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            raise map_exception(exc) from exc

    def close(self) -> None:
        """Drop the connection (a stream cut short must not go back to the pool half-read)."""
        self._response.close()

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
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        timeout = aiohttp.ClientTimeout(
            total=self.config.total_timeout_ms / 1000,
            sock_connect=self.config.connect_timeout_ms / 1000,
            # Between any two reads, the first byte included: a stalled upstream is cut here.
            sock_read=self.config.first_byte_timeout_ms / 1000,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,  # pass bytes through as the provider sent them
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        """Send a request and wait for the status line and headers."""
        if self._session is None:
            raise RuntimeError("UpstreamClient used before open()")
        try:
            response = await self._session.post(url, data=body, headers=headers)
        except Exception as exc:
            raise map_exception(exc) from exc
        return UpstreamResponse(response)


def map_exception(exc: BaseException) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ServiceUnavailable("upstream unreachable: connection failed", reason="connect")
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return GatewayTimeout("upstream timed out", reason="timeout")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return BadGateway("upstream closed the connection", reason="reset")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return BadGateway(f"upstream request failed: {type(exc).__name__}", reason="reset")
    raise exc

"""Keep-alive connections per origin, each origin with its own cap, so a slow provider holding
all of its connections never makes a request to another provider wait.

At an origin's cap, its requests queue in arrival order and what frees up is handed to the
oldest one directly (an idle connection, or a slot to open one), so a request that waited
cannot lose what it was woken for to a newcomer. A request that waits longer than the pool
timeout gets a 503 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.errors import ServiceUnavailable
from gateway.upstream.connection import Connection

Origin = tuple[str, str, int]  # scheme, host, port
# Idle connections older than this are closed rather than reused (aiohttp's default too).
# Servers drop idle connections after 5 s (uvicorn, and so vLLM) to 75 s (nginx); one the
# server already closed is seen on its socket before reuse (Connection.still_open).
IDLE_TIMEOUT_S = 15.0
# A connection idle this long has its socket polled for a FIN the loop has not read yet (a
# poll costs a syscall: a connection reused at once, the hot path's case, is not polled). Servers
# close idle connections after seconds, so a FIN cannot be racing a shorter idle time.
POLL_IDLE_AFTER_S = 0.05

# What a queued request is handed: an idle connection, or None for a slot to open one in.
Grant = Connection | None


class OriginPool:
    """One origin's connections: idle ones (newest last), how many are open, who waits."""

    __slots__ = ("idle", "open", "waiters")

    def __init__(self) -> None:
        self.idle: deque[Connection] = deque()
        self.open = 0  # idle, in use, and slots granted to requests still connecting
        self.waiters: deque[asyncio.Future[Grant]] = deque()


class Pool:
    def __init__(self, limit: int, wait_timeout: float) -> None:
        self.limit = limit  # per origin
        self.wait_timeout = wait_timeout
        self._origins: dict[Origin, OriginPool] = {}
        self._closed = False

    def origin(self, origin: Origin) -> OriginPool:
        pool = self._origins.get(origin)
        if pool is None:
            pool = self._origins[origin] = OriginPool()
        return pool

    async def acquire(
        self, origin: Origin, connect: Callable[[], Awaitable[Connection]], deadline: float
    ) -> tuple[Connection, bool]:
        """A connection to `origin` and whether it was used before (the newest idle one, else
        a new one once the cap allows). ServiceUnavailable if none is free within the pool
        timeout; TimeoutError if `deadline` comes first."""
        if self._closed:
            raise ServiceUnavailable("the gateway is shutting down", reason="shutdown")
        pool = self.origin(origin)
        if not pool.waiters:  # nobody queued ahead: take what is there
            connection = _take_idle(pool)
            if connection is not None:
                return connection, True
            if pool.open < self.limit:
                pool.open += 1
                return await self._open(pool, connect), False
        grant = await self._wait(pool, origin, deadline)
        if grant is not None:
            return grant, True
        return await self._open(pool, connect), False

    def release(self, origin: Origin, connection: Connection) -> None:
        """Back to the pool if the response ended cleanly and the server keeps the connection
        open; closed otherwise."""
        connection.in_use = False
        pool = self.origin(origin)
        if connection.reusable and not self._closed:
            connection.idle_since = asyncio.get_running_loop().time()
            pool.idle.append(connection)
        else:
            connection.discard()
            pool.open -= 1
        if pool.waiters:
            _hand_over(pool, self.limit)

    def close(self) -> None:
        self._closed = True
        for pool in self._origins.values():
            for connection in pool.idle:
                connection.discard()
                pool.open -= 1
            pool.idle.clear()
            for waiter in pool.waiters:
                if not waiter.done():
                    waiter.set_exception(
                        ServiceUnavailable("the gateway is shutting down", reason="shutdown"))
            pool.waiters.clear()

    async def _open(self, pool: OriginPool, connect: Callable[[], Awaitable[Connection]]) -> Connection:
        """A new connection in a slot already counted in `open`; the slot goes back on failure."""
        try:
            connection = await connect()
        except BaseException:
            pool.open -= 1
            _hand_over(pool, self.limit)
            raise
        connection.in_use = True
        return connection

    async def _wait(self, pool: OriginPool, origin: Origin, deadline: float) -> Grant:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Grant] = loop.create_future()
        pool.waiters.append(waiter)
        _hand_over(pool, self.limit)  # something may be free already (a newcomer queued behind others)
        give_up = loop.time() + self.wait_timeout
        try:
            async with asyncio.timeout_at(min(deadline, give_up)):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                _give_back(pool, waiter.result(), self.limit)  # granted, but this request is leaving
            elif waiter in pool.waiters:
                pool.waiters.remove(waiter)
            if isinstance(exc, TimeoutError) and give_up <= deadline:
                scheme, host, port = origin
                raise ServiceUnavailable(
                    f"no free connection to {scheme}://{host}:{port} within upstream.pool_timeout_ms "
                    f"({self.limit} open, the upstream.max_connections cap)",
                    reason="pool_timeout", code="upstream_pool_exhausted", headers={"retry-after": "1"},
                ) from None
            raise


def _give_back(pool: OriginPool, grant: Grant, limit: int) -> None:
    if grant is None:
        pool.open -= 1
    else:
        grant.in_use = False
        pool.idle.append(grant)
    _hand_over(pool, limit)


def _hand_over(pool: OriginPool, limit: int) -> None:
    """Serve queued requests, oldest first: an idle connection, else a slot under the cap."""
    waiters = pool.waiters
    while waiters:
        waiter = waiters[0]
        if waiter.done():  # cancelled or timed out; its own handler has nothing left to remove
            waiters.popleft()
            continue
        grant: Grant = _take_idle(pool)
        if grant is None:
            if pool.open >= limit:
                return
            pool.open += 1
        waiters.popleft()
        waiter.set_result(grant)


def _take_idle(pool: OriginPool) -> Connection | None:
    idle = pool.idle
    if not idle:
        return None
    now = asyncio.get_running_loop().time()
    expired = now - IDLE_TIMEOUT_S
    while idle and idle[0].idle_since < expired:
        _drop(pool, idle.popleft())
    while idle:
        connection = idle.pop()
        if connection.still_open(now - connection.idle_since >= POLL_IDLE_AFTER_S):
            connection.in_use = True
            return connection
        _drop(pool, connection)
    return None


def _drop(pool: OriginPool, connection: Connection) -> None:
    connection.discard()
    pool.open -= 1

"""Keep-alive connections per origin, with one cap on how many are open in all.

At the cap, requests queue in arrival order and what frees up is handed to the oldest one
directly (an idle connection to its origin, or a slot to open one), so a request that waited
cannot lose what it was woken for to a newcomer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.errors import ServiceUnavailable
from gateway.upstream.connection import Connection

Origin = tuple[str, str, int]  # scheme, host, port
# Idle connections older than this are closed rather than reused (aiohttp's default too).
# Servers drop idle connections after 5 s (uvicorn, and so vLLM) to 75 s (nginx); one
# dropped as a request goes out is resent by the client on a fresh connection.
IDLE_TIMEOUT_S = 15.0

# What a queued request is handed: an idle connection, or None for a slot to open one in.
Grant = Connection | None


class Pool:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0  # idle, in use, and slots granted to requests still connecting
        self._idle: dict[Origin, deque[Connection]] = {}
        self._waiters: deque[tuple[Origin, asyncio.Future[Grant]]] = deque()
        self._closed = False

    async def acquire(
        self, origin: Origin, connect: Callable[[], Awaitable[Connection]], deadline: float
    ) -> tuple[Connection, bool]:
        """A connection to `origin` and whether it was used before (the newest idle one, else
        a new one once the cap allows; TimeoutError if none is free by `deadline`)."""
        if self._closed:
            raise ServiceUnavailable("the gateway is shutting down", reason="shutdown")
        if not self._waiters:  # nobody queued ahead: take what is there
            connection = self._take_idle(origin)
            if connection is not None:
                return connection, True
            if self._reserve_slot():
                return await self._open(connect), False
        grant = await self._wait(origin, deadline)
        if grant is not None:
            return grant, True
        return await self._open(connect), False

    def release(self, origin: Origin, connection: Connection) -> None:
        """Back to the pool if the response ended cleanly and the server keeps the connection
        open; closed otherwise."""
        connection.in_use = False
        if connection.reusable and not self._closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(origin, deque()).append(connection)
        else:
            connection.abort()
            self.open -= 1
        if self._waiters:
            self._hand_over()

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
                self.open -= 1
        self._idle.clear()
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ServiceUnavailable("the gateway is shutting down", reason="shutdown"))
        self._waiters.clear()

    async def _open(self, connect: Callable[[], Awaitable[Connection]]) -> Connection:
        """A new connection in a slot already counted in `open`; the slot goes back on failure."""
        try:
            connection = await connect()
        except BaseException:
            self.open -= 1
            self._hand_over()
            raise
        connection.in_use = True
        return connection

    async def _wait(self, origin: Origin, deadline: float) -> Grant:
        waiter: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        entry = (origin, waiter)
        self._waiters.append(entry)
        self._hand_over()  # something may be free already (a newcomer queued behind others)
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(origin, waiter.result())  # granted, but this request is leaving
            elif entry in self._waiters:
                self._waiters.remove(entry)
            raise

    def _give_back(self, origin: Origin, grant: Grant) -> None:
        if grant is None:
            self.open -= 1
        else:
            grant.in_use = False
            self._idle.setdefault(origin, deque()).append(grant)
        self._hand_over()

    def _hand_over(self) -> None:
        """Serve queued requests, oldest first: an idle connection to the origin, else a slot
        (closing an idle connection to another origin to make one, at the cap)."""
        for entry in list(self._waiters):
            origin, waiter = entry
            if waiter.done():  # cancelled or timed out; its own handler removes it
                continue
            grant: Grant = self._take_idle(origin)
            if grant is None and not self._reserve_slot():
                continue
            self._waiters.remove(entry)
            waiter.set_result(grant)

    def _take_idle(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        expired = asyncio.get_running_loop().time() - IDLE_TIMEOUT_S
        while idle and idle[0].idle_since < expired:
            self._drop(idle.popleft())
        while idle:
            connection = idle.pop()
            if not connection.closed:
                connection.in_use = True
                return connection
            self._drop(connection)
        return None

    def _reserve_slot(self) -> bool:
        """Count a connection about to be opened, if the cap allows one (making room by closing
        an idle connection to any origin)."""
        if self.open >= self.limit:
            for idle in self._idle.values():
                if idle:
                    self._drop(idle.popleft())
                    break
            else:
                return False
        self.open += 1
        return True

    def _drop(self, connection: Connection) -> None:
        connection.abort()
        self.open -= 1

"""Keep-alive connections per origin, with one cap on how many are open in all."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.upstream.connection import Connection

Origin = tuple[str, str, int]  # scheme, host, port
# Idle connections older than this are closed rather than reused (aiohttp's default too).
# Servers drop idle connections after 5 s (uvicorn, and so vLLM) to 75 s (nginx); one that
# closes as a request goes out is covered by the client's resend on a fresh connection.
IDLE_TIMEOUT_S = 15.0


class Pool:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0  # idle and in use
        self._idle: dict[Origin, deque[Connection]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def acquire(
        self, origin: Origin, connect: Callable[[], Awaitable[Connection]], deadline: float
    ) -> tuple[Connection, bool]:
        """A connection to `origin` and whether it was used before (the newest idle one, else
        a new one once the cap allows; TimeoutError if none is free by `deadline`)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise RuntimeError("connection pool is closed")
            idle = self._idle.get(origin)
            if idle:
                expired = loop.time() - IDLE_TIMEOUT_S
                while idle and idle[0].idle_since < expired:
                    self._drop(idle.popleft())
                while idle:
                    connection = idle.pop()
                    if not connection.closed:
                        connection.in_use = True
                        return connection, True
                    self._drop(connection)
            if self.open < self.limit:
                break
            if not self._close_one_idle():
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    async with asyncio.timeout_at(deadline):
                        await waiter
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
        self.open += 1
        try:
            connection = await connect()
        except BaseException:
            self.open -= 1
            self._wake_one()
            raise
        connection.in_use = True
        return connection, False

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
        self._wake_one()

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _drop(self, connection: Connection) -> None:
        connection.abort()
        self.open -= 1

    def _close_one_idle(self) -> bool:
        """At the cap, an idle connection to another origin makes room for a new one."""
        for idle in self._idle.values():
            if idle:
                self._drop(idle.popleft())
                return True
        return False

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

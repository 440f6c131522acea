"""A pipelined RESP client for one Redis server: the pinned path's single command, cheaply.

redis-py and coredis spend several times this client's CPU on one `GET` (a pool checkout, a
semaphore, command packing and parsing in Python; docs/performance.md has the figures from
loadtest/redis_clients.py). Here one connection carries every command back to back and Redis
answers them in order, so a reply goes to the oldest waiting caller: a deque of futures, hiredis for
packing and parsing, one timer for the whole connection.

- Timeouts: each command has a deadline `timeout` after it was sent; past it that command alone
  fails with TimeoutError (its reply, if it comes, is read and dropped). Only a connection whose
  oldest command has waited `hung_after` is presumed dead and dropped, so a hung Redis or a
  vanished peer is left for a fresh connection while one slow reply costs only its own command.
- Failover: `-READONLY`, `-LOADING` and `-MASTERDOWN` mean this connection reaches a node that
  cannot serve us (a managed Redis moved its primary behind the same name): the connection is
  dropped and the command sent once more on a fresh one, with every command in flight on it.
- Reconnects: a command on a connection that dies (Redis's idle `timeout`, CLIENT KILL, a
  proxy's cut) is sent once more on a fresh connection; AUTH and SELECT open each connection.
- Refusals: a Redis at `maxclients` (or in protected mode) answers a new connection unasked and
  closes it; that fails the connection (an outage, as redis-py reports it), never the command
  that happened to wait first. A connect that times out is an outage too, not a late reply.
- Other error replies (`-NOPERM`, `-WRONGTYPE`, ...) are the command's answer: ResponseError.
- Bounds: at most `limit` commands in flight; further callers wait for room, at most `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
from redis.exceptions import ResponseError

# A timer may fire this early (libuv rounds to milliseconds); such a command is due anyway.
TIMER_SLACK_S = 0.001
# A connection whose oldest command waited this many timeouts (at least HUNG_MIN_S) is dropped.
HUNG_TIMEOUTS = 8
HUNG_MIN_S = 2.0
# Replies that mean "this node cannot serve you now": drop the connection and reconnect.
FAILOVER_REPLIES = ("READONLY", "LOADING", "MASTERDOWN")
# What Redis sends unasked as it refuses a connection (at maxclients; protected mode), then
# closes it: an outage of this link, not the answer to whichever command waits first.
REFUSAL_REPLIES = ("ERR max number of clients reached", "DENIED")


class Failover(ConnectionError):
    """Redis answered -READONLY, -LOADING or -MASTERDOWN: the connection reaches a node that is
    not (or not yet) a serving primary."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where a connection goes and what opens it (see `connection.resp_address`)."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket, instead of host and port
    ssl: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0


class Link(asyncio.Protocol):
    """One connection: commands written back to back, replies matched to them in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, limit: int) -> None:
        self.loop = loop
        self.timeout = timeout
        self.limit = limit
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.hung_after = max(HUNG_MIN_S, HUNG_TIMEOUTS * timeout)
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.expired = 0  # leading commands in `pending` already failed by their deadline
        self.waiting: deque[asyncio.Future[None]] = deque()  # callers waiting for room
        self.woken = 0  # callers given room that have not sent yet: it is theirs
        self.transport: asyncio.Transport | None = None
        self.error: Exception | None = None  # why the link is dead; None while usable
        self.closed: asyncio.Future[None] = loop.create_future()
        self.outbox: list[bytes] = []  # sent, not yet written (see `send`)
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A peer that vanished without a FIN (a proxy, a partition) is noticed eventually
            # even on an idle connection.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.error is not None:
            raise _copy(self.error)
        future = self.loop.create_future()
        deadline = self.loop.time() + self.timeout
        self.pending.append((future, deadline))
        # Written once per turn of the loop: the commands of every request that got this far
        # in the turn go out in one send (and tend to come back in one read).
        if not self.outbox:
            self.loop.call_soon(self._flush)
        self.outbox.append(command)
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._check_deadline)
        return future

    def _flush(self) -> None:
        if self.error is None:
            cast(asyncio.Transport, self.transport).writelines(self.outbox)
        self.outbox.clear()

    def full(self) -> bool:
        return bool(self.waiting) or len(self.pending) + self.woken >= self.limit

    async def room(self) -> None:
        """Wait, first come first served, until a command may be sent without exceeding
        `limit` in flight (or the link dies)."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                with contextlib.suppress(ValueError):
                    self.waiting.remove(waiter)
            else:  # given room, then cancelled before using it: pass the room on
                self.woken -= 1
                self._wake()
            raise
        self.woken -= 1  # the caller sends at once, taking the room up again

    def _wake(self) -> None:
        while self.waiting and len(self.pending) + self.woken < self.limit:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.woken += 1

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        try:
            while (reply := self.reader.gets()) is not False:
                if isinstance(reply, ResponseError) and str(reply).startswith(REFUSAL_REPLIES):
                    self.fail(ConnectionError(f"Redis refused the connection: {str(reply)[:120]}"))
                    return
                if not pending:
                    unasked = str(reply)[:80]
                    self.fail(ConnectionError(f"Redis sent a reply no command asked for: {unasked!r}"))
                    return
                future = pending.popleft()[0]
                if self.expired:
                    self.expired -= 1
                if isinstance(reply, ResponseError):
                    if str(reply).startswith(FAILOVER_REPLIES):
                        failover = Failover(f"Redis answered {str(reply)[:120]}")
                        if not future.done():
                            future.set_exception(failover)
                        self.fail(failover)  # every command after it reaches the same node
                        return
                    if not future.done():
                        future.set_exception(reply)
                elif not future.done():  # else its caller was cancelled or timed out
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked
            self.fail(ConnectionError(f"Redis protocol error: {exc!r}"))
            return
        if self.waiting:
            self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        reason = "Redis closed the connection" if exc is None else f"connection lost: {exc!r}"
        self.fail(ConnectionError(reason))
        if not self.closed.done():
            self.closed.set_result(None)

    def fail(self, error: Exception) -> None:
        """Kill the link: every command on it, and every caller waiting for room, gets `error`."""
        if self.error is None:
            self.error = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future, _ in self.pending:
            if not future.done():
                future.set_exception(_copy(error))
        self.pending.clear()
        self.expired = 0
        self.outbox.clear()
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(_copy(error))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _check_deadline(self) -> None:
        """Fail the commands past their deadline, each alone; drop the link if its oldest command
        has waited `hung_after`; then watch the next deadline."""
        self._timer = None
        pending = self.pending
        now = self.loop.time() + TIMER_SLACK_S
        index = self.expired
        while index < len(pending) and pending[index][1] <= now:
            future = pending[index][0]
            if not future.done():
                future.set_exception(TimeoutError(f"Redis did not answer within {self.timeout:g} s"))
            index += 1
        self.expired = index
        if not pending:
            return
        # Replies come in order: the oldest command waiting this long means Redis has answered
        # nothing on this connection for about as long.
        hung_at = pending[0][1] - self.timeout + self.hung_after
        if hung_at <= now:
            self.fail(ConnectionError(f"Redis answered nothing for {self.hung_after:g} s"))
            return
        due = hung_at
        if index < len(pending):
            due = min(due, pending[index][1])
        self._timer = self.loop.call_at(due, self._check_deadline)


def pack(args: tuple[str | bytes | int, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # stub: a 1-tuple
    return packed


def _copy(error: Exception) -> Exception:
    """A fresh exception per caller: one instance raised in many tasks shares a traceback."""
    return type(error)(*error.args)


class RespClient:
    """Commands to one Redis server over one pipelined connection, opened on first use and
    reopened when it dies. Implements the store's `Commands` (see `connection.py`)."""

    pooled = False  # one connection; `limit` bounds the commands in flight on it

    def __init__(
        self, address: Address, timeout: float, connect_timeout: float, limit: int,
        scripts: dict[str, str],
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.limit = limit
        self.scripts = {name: (_sha1(source), source) for name, source in scripts.items()}
        self._link: Link | None = None
        self._connecting: asyncio.Task[Link] | None = None
        self._closed = False

    async def execute(self, *args: str | bytes | int) -> Any:
        command = pack(args)
        link = self._link
        if link is None or link.error is not None:
            link = await self._connect(link)
        try:
            if link.full():
                await self._room(link)
            return await link.send(command)
        except ConnectionError:  # the connection died under this command: once more, anew
            link = await self._connect(link)
            if link.full():
                await self._room(link)
            return await link.send(command)

    async def _room(self, link: Link) -> None:
        """Wait for room on a full link, no longer than a command may take."""
        try:
            async with asyncio.timeout(self.timeout):
                await link.room()
        except TimeoutError:
            raise TimeoutError(f"no room for a Redis command within {self.timeout:g} s") from None

    async def get(self, key: str) -> bytes | None:
        return cast("bytes | None", await self.execute(b"GET", key))

    async def script(self, name: str, keys: tuple[str, ...], args: tuple[str | int, ...]) -> Any:
        """EVALSHA, falling back to EVAL (which caches the script) when Redis lacks it."""
        sha, source = self.scripts[name]
        try:
            return await self.execute(b"EVALSHA", sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute(b"EVAL", source, len(keys), *keys, *args)

    async def ping(self) -> bool:
        return bool(await self.execute(b"PING") == b"PONG")

    async def _connect(self, stale: Link | None) -> Link:
        """The live link: a fresh one in place of `stale`, opened once for every caller."""
        if self._closed:
            raise ConnectionError("the Redis client is closed")
        link = self._link
        if link is not None and link is not stale and link.error is None:
            return link  # another caller reconnected already
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(_retrieve)
        # Shielded: one caller's cancellation must not abort the others' connection.
        return await asyncio.shield(self._connecting)

    async def _open(self) -> Link:
        loop = asyncio.get_running_loop()
        address = self.address
        link = Link(loop, self.timeout, self.limit)
        try:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    if address.path is not None:
                        await loop.create_unix_connection(lambda: link, address.path, ssl=address.ssl)
                    else:
                        await loop.create_connection(
                            lambda: link, address.host, address.port, ssl=address.ssl)
            except TimeoutError:  # no connection at all: an outage, not a reply that came late
                waited = f"{self.connect_timeout:g} s"
                raise ConnectionError(f"connecting to Redis timed out after {waited}") from None
            hello: list[tuple[str | int, ...]] = []
            if address.username is not None:
                hello.append(("AUTH", address.username, address.password or ""))
            elif address.password is not None:
                hello.append(("AUTH", address.password))
            if address.db:
                hello.append(("SELECT", address.db))
            await asyncio.gather(*(link.send(pack(command)) for command in hello))
        except BaseException:
            await _close(link)
            raise
        finally:
            self._connecting = None
        self._link = link
        return link

    async def aclose(self) -> None:
        """Fail what is in flight, close the connection and wait until it is closed."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
        if self._link is not None:
            await _close(self._link)
            self._link = None


async def _close(link: Link) -> None:
    link.fail(ConnectionError("the Redis client is closed"))
    if link.transport is not None:
        # abort() closes the socket on the loop's next turn; wait for it, not for ever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await asyncio.shield(link.closed)


def _retrieve(task: asyncio.Task[Link]) -> None:
    """Mark a failed connection attempt's error as seen: its callers may all have gone."""
    if not task.cancelled():
        task.exception()


def _sha1(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()

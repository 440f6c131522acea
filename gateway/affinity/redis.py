"""Pins shared by every replica through Redis: one round trip per request, failing open.

Keys: `{prefix}:{b<bucket>}:p:<digest>` for pins and `{prefix}:{b<bucket>}:idx` for a sorted set
of pin keys scored by expiry time (ms), which is how the cap finds the pin closest to expiry. The
braces are a Redis Cluster hash tag: a bucket's pins and its index share one slot, so each Lua
script (see `scripts.py`) touches one slot. A single server uses one bucket; a cluster spreads
pins over 16.

While Redis is unreachable the store answers from a bounded local cache (`degraded`) and a
circuit breaker keeps requests from paying a timeout each. Pins made or served meanwhile are
remembered and published (first writer wins) as soon as Redis answers again, so replicas that
saw a session during the outage agree with each other afterwards.

Commands go out through `connection.connect`: on a single server, the pipelined `RespClient`
(a pinned request's `GET` costs a few microseconds of CPU, not redis-py's 60-70); on Sentinel
and Cluster, redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.affinity.base import Lookup, Pin, Pinned, Removal
from gateway.affinity.breaker import Backoff, CircuitBreaker
from gateway.affinity.connection import Commands, PooledCommands, connect
from gateway.affinity.memory import MemoryStore
from gateway.config import RoutingConfig

CLUSTER_BUCKETS = 16
# Backoff between probes of a dead Redis is capped at this many cooldowns, so recovery is
# noticed within seconds of Redis returning rather than the 30 s a plain cap would allow.
PROBE_CAP_COOLDOWNS = 4
# Publishing after an outage takes a few slots at a time, leaving the rest to requests.
FLUSH_BATCH = 8
UNAVAILABLE = (RedisError, OSError)
T = TypeVar("T")
Args = tuple[str | int, ...]


class Unavailable(Exception):
    """Redis did not answer this call, or the breaker did not let it try."""


class RedisStore:
    """The shared store (see the module docstring for the key layout and fail-open rules)."""

    name = "redis"

    def __init__(self, routing: RoutingConfig, client: Redis | None = None) -> None:
        cache = routing.session_cache
        self.ttl_ms = routing.session_ttl_seconds * 1000
        self.refresh = routing.session_ttl_refresh
        self.prefix = cache.key_prefix
        self.buckets = CLUSTER_BUCKETS if cache.cluster else 1
        self.cap_per_bucket = max(1, math.ceil(routing.session_max_entries / self.buckets))
        self._cache_config = cache
        self._commands: Commands | None = PooledCommands(client) if client is not None else None
        self.local = MemoryStore(
            routing.session_ttl_seconds, cache.local_cache_entries, routing.session_ttl_refresh
        )
        # Pins made or served while Redis was down, to publish when it is back.
        self._unsynced = MemoryStore(routing.session_ttl_seconds, cache.local_cache_entries)
        self._publishing: dict[str, Pin] = {}  # taken from _unsynced, not yet in Redis
        cooldown = cache.breaker_cooldown_ms / 1000
        self.breaker = CircuitBreaker(Backoff(cooldown, cooldown * PROBE_CAP_COOLDOWNS))
        self._flush: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(cache.pool_size)

    @property
    def commands(self) -> Commands:
        if self._commands is None:
            raise RuntimeError("RedisStore used before open()")
        return self._commands

    async def open(self) -> None:
        if self._commands is None:
            self._commands = connect(self._cache_config)

    async def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush
        if self._commands is not None:
            await self._commands.aclose()

    async def ping(self) -> bool:
        try:
            return await self.commands.ping()
        except UNAVAILABLE:
            return False

    def keys(self, key: str) -> tuple[str, str]:
        bucket = int(key[:4], 16) % self.buckets
        tag = f"{self.prefix}:{{b{bucket}}}"
        return f"{tag}:p:{key}", f"{tag}:idx"

    @property
    def pending(self) -> int:
        """Pins made or served during an outage that are not yet published."""
        return len(self._unsynced) + len(self._publishing)

    async def get(self, key: str) -> Lookup:
        redis_key, index_key = self.keys(key)
        commands = self.commands
        try:
            if self.refresh:
                raw = await self._redis(
                    commands.script, "TOUCH", (redis_key, index_key), (self.ttl_ms,))
            else:
                raw = await self._redis(commands.get, redis_key)
        except Unavailable:
            return self._get_locally(key)
        if raw is None:
            return await self._republish(key)
        pin = Pin.decode(raw)
        self._remember(key, pin)
        return Lookup(pin)

    def _get_locally(self, key: str) -> Lookup:
        pin = self.local.lookup(key)
        if pin is not None:
            self._unsynced.store(key, pin)
        return Lookup(pin, degraded=True)

    async def _republish(self, key: str) -> Lookup:
        """A pin made locally while Redis was down, not yet flushed, goes to Redis now."""
        pending = self._unsynced.lookup(key) or self._publishing.get(key)
        if pending is None:
            return Lookup(None)
        self._unsynced.remove(key)
        return Lookup((await self.pin(key, pending)).pin)  # NX: racing the flush is harmless

    async def pin(self, key: str, pin: Pin) -> Pinned:
        try:
            return await self._publish(key, pin)
        except Unavailable:
            return self._pin_locally(key, pin)

    async def _publish(self, key: str, pin: Pin) -> Pinned:
        args: Args = (pin.encode(), self.ttl_ms, self.cap_per_bucket)
        created, raw, evicted = await self._redis(
            self.commands.script, "PIN", self.keys(key), args)
        winner = Pin.decode(raw)
        self._remember(key, winner)
        return Pinned(winner, created=bool(created), evicted=int(evicted))

    def _remember(self, key: str, pin: Pin) -> None:
        """Copy a pin into the fail-open cache. A hit on a pin already there leaves its local
        expiry alone (a sliding one was slid by the lookup), so with a fixed TTL the copy does
        not outlive the pin in Redis."""
        if self.local.lookup(key) != pin:
            self.local.store(key, pin)

    def _pin_locally(self, key: str, pin: Pin) -> Pinned:
        result = self.local.put(key, pin)
        self._unsynced.store(key, result.pin)
        return Pinned(result.pin, result.created, result.evicted, degraded=True)

    async def repin(self, key: str, old: Pin, new: Pin) -> Pinned:
        args: Args = (old.encode(), new.encode(), self.ttl_ms, self.cap_per_bucket)
        try:
            replaced, raw, evicted = await self._redis(
                self.commands.script, "REPIN", self.keys(key), args)
        except Unavailable:
            result = self.local.replace(key, old, new)
            self._unsynced.store(key, result.pin)
            return Pinned(result.pin, result.created, result.evicted, degraded=True)
        current = Pin.decode(raw)
        self._remember(key, current)
        return Pinned(current, created=bool(replaced), evicted=int(evicted))

    async def delete(self, key: str) -> Removal:
        """With Redis down only the local copy goes, and the answer says so (degraded)."""
        if key in self._publishing and self._flush is not None:
            # On its way to Redis from an outage: delete once it has landed, or it would return.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flush)
        removed = self.local.remove(key)
        self._unsynced.remove(key)
        try:
            return Removal(bool(await self._redis(self.commands.script, "DELETE", self.keys(key), ())))
        except Unavailable:
            return Removal(removed, degraded=True)

    async def _redis(self, command: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One Redis command behind the breaker. Through a connection pool it holds one of
        `pool_size` slots, so that bursts queue here instead of exhausting the pool (which
        would look like an outage and trip the breaker); the pipelined client bounds itself."""
        was_open = self.breaker.open
        if not self.breaker.allow():
            raise Unavailable
        try:
            if not self.commands.pooled:
                result = await command(*args)
            else:
                async with self._slots:
                    if self.breaker.open and not was_open:
                        raise Unavailable  # Redis failed while this call waited for a slot
                    result = await command(*args)
        except UNAVAILABLE as exc:
            self.breaker.failure()
            raise Unavailable from exc
        if self.breaker.success() and self._flush is None:
            self._flush = asyncio.ensure_future(self._publish_unsynced())
        return result

    async def count(self) -> int:
        """Live pins across buckets; sampled for the gauge, never on the request path."""
        total = 0
        for bucket in range(self.buckets):
            index_key = f"{self.prefix}:{{b{bucket}}}:idx"
            total += int(await self.commands.script("COUNT", (index_key,), ()))
        return total

    async def _publish_unsynced(self) -> None:
        """After an outage: publish what this replica pinned or served meanwhile (first writer
        wins, so a pin another replica published first is adopted here instead)."""
        try:
            while batch := self._unsynced.drain(FLUSH_BATCH):
                self._publishing = dict(batch)
                results = await asyncio.gather(
                    *(self._publish(key, pin) for key, pin in batch), return_exceptions=True
                )
                self._publishing = {}
                failed = [entry for entry, result in zip(batch, results, strict=True)
                          if isinstance(result, Unavailable)]
                for key, pin in failed:  # NX made any that did land harmless to resend
                    self._unsynced.store(key, pin)
                if failed:
                    return
        finally:
            self._publishing = {}
            self._flush = None

    def debug_state(self) -> dict[str, Any]:
        return {
            "breaker_open": self.breaker.open,
            "local_pins": len(self.local),
            "unpublished_pins": self.pending,
        }

"""Pins shared by every replica through Redis: one round trip per request, failing open.

Keys (see `scripts.py`): `{prefix}:{b<bucket>}:p:<digest>` for pins and `{prefix}:{b<bucket>}:idx`
for a sorted set of pin keys scored by expiry time (ms), which is how the cap finds the pin
closest to expiry; `:t:<tenant tag>` indexes one tenant's pins the same way when it has a
quota; `:s:<session digest>` holds a session's lanes for the admin API, indexed for the
cap by `:sidx`. The braces are a Redis Cluster hash tag: a bucket's keys share one slot, so
each Lua script touches one slot. A single server uses one bucket; a cluster spreads pins
over 16.

While Redis is unreachable the store answers from a bounded local cache (`degraded`) and a
circuit breaker keeps requests from paying a timeout each. Pins made or served meanwhile are
remembered and published (first writer wins) as soon as Redis answers again, so replicas that
saw a session during the outage agree with each other afterwards.

Redis losing its data (restarted without persistence, failed over to an empty node) is told
apart from a pin removed on purpose by the bucket's epoch, a token that lives as long as the
data: a pin carries the epoch it was written in. When Redis has no pin for a session this
replica holds, the WRITEBACK script restores it (first writer wins) unless the epoch is the
same (the pin was evicted, expired or deleted), a deletion marker says an admin removed it, or
it is past its expiry. Only a miss pays for this; a hit is the one `GET`.

Commands go out through `connection.connect` (`session_cache.client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis

from gateway.affinity.base import LaneRef, Lookup, Pin, Pinned, Quotas, Removal, StoreState, split_key
from gateway.affinity.breaker import Backoff, CircuitBreaker
from gateway.affinity.connection import UNAVAILABLE, Commands, PooledCommands, error_code, failure_kind, where
from gateway.affinity.lanes import MAX_LANES
from gateway.affinity.memory import MemoryStore
from gateway.affinity.startup import connect_or_reject, reason, verify
from gateway.config import RoutingConfig

logger = logging.getLogger("gateway.affinity")
CLUSTER_BUCKETS = 16
# Backoff between probes of a dead Redis is capped at this many cooldowns, so recovery is
# noticed within seconds of Redis returning rather than the 30 s a plain cap would allow.
PROBE_CAP_COOLDOWNS = 4
# Publishing after an outage takes a few slots at a time, leaving the rest to requests.
FLUSH_BATCH = 8
T = TypeVar("T")
Args = tuple[str | int, ...]


class Unavailable(Exception):
    """Redis did not answer this call, or the breaker did not let it try."""


class RedisStore:
    """The shared store (see the module docstring for the key layout and fail-open rules)."""

    name = "redis"

    def __init__(
        self, routing: RoutingConfig, client: Redis | None = None, quotas: Quotas | None = None,
        on_state: Callable[[StoreState], None] | None = None,
    ) -> None:
        cache = routing.session_cache
        self.ttl_ms = routing.session_ttl_seconds * 1000
        self.refresh = routing.session_ttl_refresh
        self.prefix = cache.key_prefix
        self.buckets = CLUSTER_BUCKETS if cache.cluster else 1
        self.cap_per_bucket = max(1, math.ceil(routing.session_max_entries / self.buckets))
        self._buckets = [f"{self.prefix}:{{b{n}}}" for n in range(self.buckets)]  # the hash tags
        self._indexes = [f"{bucket}:idx" for bucket in self._buckets]
        self.quotas = quotas = quotas or Quotas()
        self.where = where(cache)
        self._cache_config = cache
        self._commands: Commands | None = PooledCommands(client) if client is not None else None
        self.local = MemoryStore(routing.session_ttl_seconds, cache.local_cache_entries,
                                 routing.session_ttl_refresh, quotas=quotas)
        # Pins made or served while Redis was down, to publish when it is back.
        self._unsynced = MemoryStore(routing.session_ttl_seconds, cache.local_cache_entries)
        self._publishing: dict[str, Pin] = {}  # taken from _unsynced, not yet in Redis
        # Pins an admin deleted while Redis was down: deleted there first thing when it is back.
        self._deletions: dict[str, None] = {}
        self._max_deletions = cache.local_cache_entries
        cooldown = cache.breaker_cooldown_ms / 1000
        self.breaker = CircuitBreaker(Backoff(cooldown, cooldown * PROBE_CAP_COOLDOWNS))
        self._flush: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(cache.pool_size)
        self.state: StoreState = "up"
        self._on_state = on_state
        self._down_since = 0.0
        self._command_errors: set[str] = set()  # error codes already logged
        self.restored = 0  # pins written back after Redis lost them

    @property
    def commands(self) -> Commands:
        if self._commands is None:
            raise RuntimeError("RedisStore used before open()")
        return self._commands

    async def open(self) -> None:
        """Connect and check credentials and permissions: refused is StoreRejected (a config
        error); unreachable is a warning, and the store starts degraded (fail-open)."""
        if self._commands is None:
            self._commands = connect_or_reject(self._cache_config)
        error = await verify(self.commands, self._cache_config.key_prefix, self.where)
        if error is None:
            self._set_state("up", "connected")
            return
        self.breaker.failure()
        self._set_state("degraded", f"is unreachable at start ({reason(error)})")

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
        """The pin's Redis key and its bucket's index."""
        bucket = int(key[:4], 16) % self.buckets if self.buckets > 1 else 0
        return f"{self._buckets[bucket]}:p:{key.partition(':')[0]}", self._indexes[bucket]

    def _write_keys(self, key: str) -> tuple[tuple[str, str, str, str, str], str, int]:
        """The writing scripts' KEYS (pin, index, epoch, tenant index, deletion marker), the
        tenant tag and the tenant's quota per bucket (0: none)."""
        digest, tenant = split_key(key)
        pin, index = self.keys(key)
        bucket = index[:-4]
        limit = self.quotas.limit(tenant)
        quota = max(1, math.ceil(limit / self.buckets)) if limit > 0 else 0
        return (pin, index, f"{bucket}:epoch", f"{bucket}:t:{tenant}", f"{bucket}:d:{digest}"), tenant, quota

    @property
    def pending(self) -> int:
        """Pins made or served during an outage that are not yet published."""
        return len(self._unsynced) + len(self._publishing)

    async def get(self, key: str, session: str | None = None, *, touch: bool = True) -> Lookup:
        redis_key, index_key = self.keys(key)
        commands = self.commands
        try:
            if self.refresh and touch:
                keys: tuple[str, ...] = (redis_key, index_key)
                # Elsewhere than the pin's slot the listing keeps the TTL its last lane gave it.
                if session is not None and (lane_keys := self._lane_keys_beside(session, index_key)):
                    keys = (*keys, *lane_keys)
                raw = await self._redis(commands.script, "TOUCH", keys, (self.ttl_ms,))
            else:
                raw = await self._redis(commands.get, redis_key)
        except Unavailable:
            return self._get_locally(key)
        if raw is None:
            return await self._missed(key)
        pin = Pin.decode(raw)
        self._remember(key, pin, touch=touch)
        return Lookup(pin)

    def _get_locally(self, key: str) -> Lookup:
        pin = self.local.lookup(key)
        if pin is not None:
            self._unsynced.store(key, pin)
        return Lookup(pin, degraded=True)

    async def _missed(self, key: str) -> Lookup:
        """Redis has no pin: one made or served here during an outage and not yet flushed goes
        to Redis now; one this replica holds is written back if Redis lost it."""
        pending = self._unsynced.lookup(key) or self._publishing.get(key)
        if pending is not None:
            self._unsynced.remove(key)
        held = pending or self.local.lookup(key)
        if held is None:
            return Lookup(None)
        try:
            return Lookup(await self._restore(key, held))
        except Unavailable:
            return self._get_locally(key)

    async def _restore(self, key: str, pin: Pin) -> Pin | None:
        """Publish a pin this replica holds: one Redis has seen goes back only if Redis lost it
        (WRITEBACK); one made during an outage is pinned (first writer wins). The pin that
        stands comes back, None when it was removed on purpose."""
        if not pin.epoch:
            return (await self._publish(key, pin)).pin
        keys, tenant, quota = self._write_keys(key)
        args: Args = (pin.encode(), self._expiry_ms(key, pin), pin.epoch, self.cap_per_bucket, quota, tenant)
        written, raw, _ = await self._redis(self.commands.script, "WRITEBACK", keys, args)
        if not raw:
            self.local.remove(key)
            return None
        current = Pin.decode(raw)
        if written:
            self.restored += 1
        self._remember(key, current)
        return current

    def _expiry_ms(self, key: str, pin: Pin) -> int:
        """When a held pin expires (ms, wall clock): the local copy's, and with a fixed TTL no
        later than the one Redis gave it."""
        left = self.local.expires_in(key)
        if left is None:  # held for publishing only (the local cache let it go)
            return pin.expires_ms or int(time.time() * 1000) + self.ttl_ms
        local = int((time.time() + left) * 1000)
        return local if self.refresh or not pin.expires_ms else min(local, pin.expires_ms)

    async def pin(self, key: str, pin: Pin, lane: LaneRef | None = None) -> Pinned:
        try:
            return await self._publish(key, pin, lane)
        except Unavailable:
            return self._pin_locally(key, pin)

    async def _publish(self, key: str, pin: Pin, lane: LaneRef | None = None) -> Pinned:
        """PIN; with `lane`, a created pin's lane joins its session's set: in the same script
        when that set is in the pin's slot (always, but in a cluster), else in a second trip."""
        keys: tuple[str, ...]
        keys, tenant, quota = self._write_keys(key)
        args: Args = (pin.encode(), self.ttl_ms, self.cap_per_bucket, quota, tenant)
        apart: tuple[tuple[str, str], Args] | None = None  # a lane set in another slot
        if lane is not None:
            if beside := self._lane_keys_beside(lane[0], keys[1]):
                keys, args = (*keys, *beside), (*args, lane[1], MAX_LANES)
            else:
                apart = self._lane_keys(lane[0]), (lane[1], self.ttl_ms, self.cap_per_bucket, MAX_LANES)
        created, raw, evicted = await self._redis(self.commands.script, "PIN", keys, args)
        if created and apart is not None:
            with contextlib.suppress(Unavailable):  # the pin stands; only its listing is lost
                await self._redis(self.commands.script, "LANE", *apart)
        winner = Pin.decode(raw)
        self._remember(key, winner)
        return Pinned(winner, created=bool(created), evicted=int(evicted))

    def _remember(self, key: str, pin: Pin, *, touch: bool = True) -> None:
        """Copy a pin into the fail-open cache. A hit on a pin already there leaves its local
        expiry alone (a sliding one was slid by the lookup, unless only looked at), so with a
        fixed TTL the copy does not outlive the pin in Redis; a pin rewritten in a new epoch
        replaces its copy."""
        held = self.local.lookup(key, touch=touch)
        if held != pin or held is None or held.stored != pin.stored:
            self.local.store(key, pin)

    def _pin_locally(self, key: str, pin: Pin) -> Pinned:
        result = self.local.put(key, pin)
        self._unsynced.store(key, result.pin)
        return Pinned(result.pin, result.created, result.evicted, degraded=True)

    async def repin(self, key: str, old: Pin, new: Pin, lane: LaneRef | None = None) -> Pinned:
        keys: tuple[str, ...]
        keys, tenant, quota = self._write_keys(key)
        args: Args = (old.encode(), new.encode(), self.ttl_ms, self.cap_per_bucket, quota, tenant)
        # in the same script where the set shares the pin's slot, else not
        if lane is not None and (beside := self._lane_keys_beside(lane[0], keys[1])):
            keys, args = (*keys, *beside), (*args, lane[1], MAX_LANES)
        try:
            replaced, raw, evicted = await self._redis(self.commands.script, "REPIN", keys, args)
        except Unavailable:
            result = self.local.replace(key, old, new)
            self._unsynced.store(key, result.pin)
            return Pinned(result.pin, result.created, result.evicted, degraded=True)
        current = Pin.decode(raw)
        self._remember(key, current)
        return Pinned(current, created=bool(replaced), evicted=int(evicted))

    async def delete(self, key: str) -> Removal:
        """Removes the pin and leaves a deletion marker for a session TTL, so replicas that hold
        a copy do not write it back. With Redis down only the local copy goes (degraded)."""
        if key in self._publishing and self._flush is not None:
            # On its way to Redis from an outage: delete once it has landed, or it would return.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flush)
        removed = self.local.remove(key)
        self._unsynced.remove(key)
        try:
            found = await self._delete(key)
        except Unavailable:
            if len(self._deletions) < self._max_deletions:
                self._deletions[key] = None
            return Removal(removed, degraded=True)
        return Removal(found or removed)

    async def _delete(self, key: str) -> bool:
        keys = self._write_keys(key)[0]
        found = await self._redis(self.commands.script, "DELETE", (keys[0], keys[1], keys[4]),
                                  (self.ttl_ms,))
        return bool(found)

    def _lane_keys(self, session: str) -> tuple[str, str]:
        """A session's lane set and its bucket's index of lane sets."""
        bucket = self.keys(session)[1][:-4]
        return f"{bucket}:s:{session.partition(':')[0]}", f"{bucket}:sidx"

    def _lane_keys_beside(self, session: str, pin_index: str) -> tuple[str, str] | None:
        """The session's lane keys when they share the slot of a pin (listed in `pin_index`), so
        one script can write both: always, but in a cluster (16 buckets)."""
        if self.buckets > 1 and self.keys(session)[1] != pin_index:
            return None
        return self._lane_keys(session)

    async def lanes(self, session: str) -> list[str] | None:
        try:
            found = await self._redis(self.commands.script, "LANES", self._lane_keys(session)[:1], ())
        except Unavailable:
            return None
        return [lane.decode() if isinstance(lane, bytes) else str(lane) for lane in found or ()]

    async def forget_lanes(self, session: str) -> None:
        with contextlib.suppress(Unavailable):
            await self._redis(self.commands.script, "UNINDEX", self._lane_keys(session), ())

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
            self._failed(exc)
            raise Unavailable from exc
        if self.breaker.success():
            self._recovered()
        return result

    def _failed(self, error: BaseException) -> None:
        kind = failure_kind(error)
        if kind == "command":  # Redis is up and refused this one command: not an outage
            code = error_code(error)
            if code not in self._command_errors:
                self._command_errors.add(code)
                logger.error("affinity store: Redis at %s refused a command (%s); requests it "
                             "serves are unpinned until this is fixed", self.where, reason(error))
            if self.breaker.success():
                self._recovered()
            return
        if self.breaker.failure(hard=kind != "late"):
            what = "rejected the gateway's credentials" if kind == "auth" else "is not answering"
            self._set_state("degraded", f"{what} ({reason(error)})")

    def _recovered(self) -> None:
        self._set_state("up", f"back after {time.monotonic() - self._down_since:.1f} s")
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._publish_unsynced())

    def _set_state(self, state: StoreState, reason: str) -> None:
        """Log each change of state once, with why; tell the gauge."""
        changed = state != self.state
        self.state = state
        if state == "degraded":
            self._down_since = time.monotonic()
            if changed or "at start" in reason:
                logger.warning("affinity store: Redis at %s %s: serving pins from this replica's "
                               "cache (degraded, fail-open) until it answers", self.where, reason)
        elif changed:
            logger.warning("affinity store: Redis at %s is %s", self.where, reason)
        else:
            logger.info("affinity store: Redis at %s is up", self.where)
        if self._on_state is not None:
            self._on_state(state)

    async def count(self) -> int:
        """Live pins across buckets; sampled for the gauge, never on the request path."""
        total = 0
        for bucket in range(self.buckets):
            index_key = f"{self.prefix}:{{b{bucket}}}:idx"
            total += int(await self.commands.script("COUNT", (index_key,), ()))
        return total

    async def _publish_unsynced(self) -> None:
        """After an outage: publish what this replica pinned or served meanwhile (first writer
        wins, so a pin another replica published first is adopted here instead; a pin deleted
        on purpose meanwhile stays deleted, here or through another replica)."""
        try:
            for key in list(self._deletions):  # first, so no publish brings one of them back
                try:
                    await self._delete(key)
                except Unavailable:
                    return
                self._deletions.pop(key, None)
            while batch := self._unsynced.drain(FLUSH_BATCH):
                self._publishing = dict(batch)
                results = await asyncio.gather(
                    *(self._restore(key, pin) for key, pin in batch), return_exceptions=True
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

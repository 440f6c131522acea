"""Pins shared by every replica through Redis: one round trip per request, failing open.

Keys: `{prefix}:{b<bucket>}:p:<digest>` for pins and `{prefix}:{b<bucket>}:idx` for a sorted set
of pin keys scored by expiry time (ms), which is how the cap finds the pin closest to expiry. The
braces are a Redis Cluster hash tag: a bucket's pins and its index share one slot, so each Lua
script touches one slot. A single server uses one bucket; a cluster spreads pins over 16.
"""

from __future__ import annotations

import math
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.affinity.base import Lookup, Pin, Pinned
from gateway.affinity.breaker import Backoff, CircuitBreaker
from gateway.affinity.connection import connect
from gateway.affinity.memory import MemoryStore
from gateway.config import RoutingConfig

# KEYS: pin, index. ARGV: value, ttl ms, cap. Returns {created, winner value, evicted}.
PIN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl) then
  return {0, redis.call('GET', KEYS[1]), 0}
end
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
local evicted = 0
if excess > 0 then
  local victims = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #victims, 2 do
    redis.call('DEL', victims[i])
    evicted = evicted + 1
  end
end
return {1, ARGV[1], evicted}
"""

# KEYS: pin, index. ARGV: ttl ms. A sliding-TTL hit: read, restart the TTL, move it in the index.
TOUCH_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if value then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[1]), KEYS[1])
end
return value
"""

CLUSTER_BUCKETS = 16


class RedisStore:
    """The shared store. While Redis is unreachable it serves from a bounded local cache
    (`degraded`), and remembers pins made meanwhile so they are published when Redis returns."""

    name = "redis"

    def __init__(self, routing: RoutingConfig, client: Redis | None = None) -> None:
        cache = routing.session_cache
        self.ttl_ms = routing.session_ttl_seconds * 1000
        self.refresh = routing.session_ttl_refresh
        self.prefix = cache.key_prefix
        self.buckets = CLUSTER_BUCKETS if cache.cluster else 1
        self.cap_per_bucket = math.ceil(routing.session_max_entries / self.buckets)
        self._cache_config = cache
        self._client = client
        self.local = MemoryStore(
            routing.session_ttl_seconds, cache.local_cache_entries, routing.session_ttl_refresh
        )
        self._unsynced: MemoryStore = MemoryStore(
            routing.session_ttl_seconds, cache.local_cache_entries
        )
        self.breaker = CircuitBreaker(Backoff(cache.breaker_cooldown_ms / 1000))
        self._pin_script: AsyncScript | None = None
        self._touch_script: AsyncScript | None = None

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise RuntimeError("RedisStore used before open()")
        return self._client

    async def open(self) -> None:
        if self._client is None:
            self._client = connect(self._cache_config)
        self._pin_script = self.client.register_script(PIN_SCRIPT)
        self._touch_script = self.client.register_script(TOUCH_SCRIPT)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    def keys(self, key: str) -> tuple[str, str]:
        bucket = int(key[:4], 16) % self.buckets
        tag = f"{self.prefix}:{{b{bucket}}}"
        return f"{tag}:p:{key}", f"{tag}:idx"

    async def get(self, key: str) -> Lookup:
        if not self.breaker.allow():
            return Lookup(self.local.lookup(key), degraded=True)
        pin_key, index_key = self.keys(key)
        try:
            if self.refresh:
                assert self._touch_script is not None
                raw = await self._touch_script(keys=[pin_key, index_key], args=[self.ttl_ms])
            else:
                raw = await self.client.get(pin_key)
        except (RedisError, OSError):
            self.breaker.failure()
            return Lookup(self.local.lookup(key), degraded=True)
        self.breaker.success()
        if raw is None:
            return await self._republish(key)
        pin = Pin.decode(raw)
        self.local.store(key, pin)
        return Lookup(pin)

    async def _republish(self, key: str) -> Lookup:
        """A pin made locally while Redis was down goes to Redis now, so replicas agree again."""
        pending = self._unsynced.lookup(key)
        if pending is None:
            return Lookup(None)
        self._unsynced.remove(key)
        return Lookup((await self.pin(key, pending)).pin)

    async def pin(self, key: str, pin: Pin) -> Pinned:
        if not self.breaker.allow():
            return self._pin_locally(key, pin)
        pin_key, index_key = self.keys(key)
        try:
            assert self._pin_script is not None
            created, raw, evicted = await self._pin_script(
                keys=[pin_key, index_key], args=[pin.encode(), self.ttl_ms, self.cap_per_bucket]
            )
        except (RedisError, OSError):
            self.breaker.failure()
            return self._pin_locally(key, pin)
        self.breaker.success()
        winner = Pin.decode(raw)
        self.local.store(key, winner)
        return Pinned(winner, created=bool(created), evicted=int(evicted))

    def _pin_locally(self, key: str, pin: Pin) -> Pinned:
        result = self.local.put(key, pin)
        if result.created:
            self._unsynced.store(key, pin)
        return Pinned(result.pin, result.created, result.evicted, degraded=True)

    async def delete(self, key: str) -> bool:
        self.local.remove(key)
        self._unsynced.remove(key)
        pin_key, index_key = self.keys(key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(pin_key)
            pipe.zrem(index_key, pin_key)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def count(self) -> int:
        """Live pins across buckets (index entries not yet expired); sampled, not per request."""
        total = 0
        for bucket in range(self.buckets):
            index_key = f"{self.prefix}:{{b{bucket}}}:idx"
            now_ms = await self._now_ms()
            total += int(await self.client.zcount(index_key, now_ms, "+inf"))
        return total

    async def _now_ms(self) -> int:
        seconds, micros = await self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def debug_state(self) -> dict[str, Any]:
        return {"breaker_open": self.breaker.open, "local_pins": len(self.local)}

"""Stored Responses (`previous_response_id`), shared by every replica through Redis, or kept
per process in memory.

A record is one JSON document holding everything a follow-up needs: the response itself, its
whole accumulated input (the chain's earlier turns included), the model and route that served
it, and whether the provider holds it natively. So a follow-up costs one GET, on any replica.

Keys are scoped by tenant (`{prefix}:resp:<blake2b(tenant, id)>`): another tenant's id is
simply not found. Records expire after `responses.ttl_seconds`; at most
`responses.max_entries` are kept, the one closest to expiry evicted first (a sorted set of
keys scored by expiry, as the pins are capped). In a Cluster the record keys and their index
share one hash tag, so the capping script touches one slot.

Reads of a store that is down raise `StoreUnavailable` (a follow-up cannot be served without
its context); writes that fail are logged and counted by the caller (the response was served).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from gateway.affinity import connection
from gateway.config import Config
from gateway.errors import StoreUnavailable


def record_key(tenant: str, response_id: str) -> str:
    return hashlib.blake2b(f"{tenant}\0{response_id}".encode(), digest_size=16).hexdigest()


class ResponseStore(Protocol):
    name: str

    async def get(self, tenant: str, response_id: str) -> dict[str, Any] | None: ...

    async def put(self, tenant: str, response_id: str, record: dict[str, Any]) -> None: ...

    async def delete(self, tenant: str, response_id: str) -> bool: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class MemoryResponseStore:
    """Per process, bounded: the oldest record (closest to expiry: one TTL for all) goes first."""

    name = "memory"

    def __init__(self, ttl_seconds: int, max_entries: int) -> None:
        self.ttl = float(ttl_seconds)
        self.max_entries = max_entries
        self._records: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, tenant: str, response_id: str) -> dict[str, Any] | None:
        key = record_key(tenant, response_id)
        entry = self._records.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._records[key]
            return None
        record: dict[str, Any] = orjson.loads(entry[1])
        return record

    async def put(self, tenant: str, response_id: str, record: dict[str, Any]) -> None:
        key = record_key(tenant, response_id)
        self._records.pop(key, None)
        self._records[key] = (time.monotonic() + self.ttl, orjson.dumps(record))
        while len(self._records) > self.max_entries:
            self._records.popitem(last=False)

    async def delete(self, tenant: str, response_id: str) -> bool:
        return self._records.pop(record_key(tenant, response_id), None) is not None

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._records.clear()


class RedisResponseStore:
    """Records in Redis, through redis-py with the session cache's URL and options, and the
    pin store's failover rule (`connection.PooledCommands`: a READONLY reply after a managed
    failover drops the pooled connections; a Sentinel deployment's sentinels closed with it)."""

    name = "redis"

    def __init__(self, config: Config) -> None:
        cache = config.routing.session_cache
        self.cache = cache
        self.ttl_ms = config.responses.ttl_seconds * 1000
        self.max_entries = config.responses.max_entries
        tag = "{" + cache.key_prefix + ":resp}"  # one Cluster slot for the records and their index
        self.prefix = tag + ":r:"
        self.index = tag + ":idx"
        self._commands: connection.PooledCommands | None = None

    @property
    def commands(self) -> connection.PooledCommands:
        if self._commands is None:
            raise RuntimeError("RedisResponseStore used before open()")
        return self._commands

    async def open(self) -> None:
        if self._commands is None:
            self._commands = connection.PooledCommands(*connection.redis_py(self.cache))

    async def close(self) -> None:
        if self._commands is not None:
            await self._commands.aclose()

    async def get(self, tenant: str, response_id: str) -> dict[str, Any] | None:
        try:
            raw = await self.commands.get(self.prefix + record_key(tenant, response_id))
        except connection.UNAVAILABLE as exc:
            raise StoreUnavailable(
                "the response store is unreachable, so previous_response_id cannot be resolved; "
                "retry shortly", code="response_store_unavailable") from exc
        if raw is None:
            return None
        record: dict[str, Any] = orjson.loads(raw)
        return record

    async def put(self, tenant: str, response_id: str, record: dict[str, Any]) -> None:
        key = self.prefix + record_key(tenant, response_id)
        args = (orjson.dumps(record).decode(), self.ttl_ms, self.max_entries)
        await self.commands.script("RESPONSE_PUT", (key, self.index), args)

    async def delete(self, tenant: str, response_id: str) -> bool:
        key = self.prefix + record_key(tenant, response_id)
        try:
            return bool(await self.commands.script("UNINDEX", (key, self.index), ()))
        except connection.UNAVAILABLE as exc:
            raise StoreUnavailable("the response store is unreachable; retry shortly",
                                   code="response_store_unavailable") from exc


def build_response_store(config: Config) -> ResponseStore:
    if config.routing.session_cache.type == "redis":
        return RedisResponseStore(config)
    return MemoryResponseStore(config.responses.ttl_seconds, config.responses.max_entries)

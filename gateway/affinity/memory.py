"""Per-process pins with a TTL, a cap and per-tenant quotas (also the Redis store's fail-open
cache)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.affinity.base import LaneRef, Lookup, Pin, Pinned, Quotas, Removal, StoreState, split_key


class MemoryStore:
    """Pins in an OrderedDict kept in expiry order.

    Every pin gets the same TTL and a refresh moves it to the end, so the front is always the pin
    closest to expiry: expiring and evicting are both pops from the front, O(1). With quotas, each
    tenant that has one gets the same kind of OrderedDict of its own keys, so its pin closest to
    expiry is found as cheaply, and evicting it never touches another tenant's.
    """

    name = "memory"
    state: StoreState = "up"

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int,
        refresh: bool = False,
        clock: Callable[[], float] = time.monotonic,
        quotas: Quotas | None = None,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.refresh = refresh
        self.clock = clock
        self.quotas = quotas or Quotas()
        self._entries: OrderedDict[str, tuple[Pin, float]] = OrderedDict()
        # tenant tag -> that tenant's keys in expiry order (only while quotas are set)
        self._tenants: dict[str, OrderedDict[str, None]] = {}

    def lookup(self, key: str, *, touch: bool = True) -> Pin | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        pin, expires = entry
        now = self.clock()
        if expires <= now:
            self._pop(key)
            return None
        if self.refresh and touch:
            self._entries[key] = (pin, now + self.ttl)
            self._entries.move_to_end(key)
            if self._tenants:  # only a tenant with a quota keeps an index, and only of its pins
                keys = self._tenants.get(split_key(key)[1])
                if keys is not None and key in keys:
                    keys.move_to_end(key)
        return pin

    def expires_in(self, key: str) -> float | None:
        """Seconds until the pin under `key` expires here; None when there is none."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1] - self.clock()

    def put(self, key: str, pin: Pin) -> Pinned:
        existing = self.lookup(key)
        if existing is not None:
            return Pinned(existing, created=False)
        return Pinned(pin, created=True, evicted=self.store(key, pin))

    def replace(self, key: str, old: Pin, new: Pin) -> Pinned:
        current = self.lookup(key)
        if current is not None and current != old:
            return Pinned(current, created=False)
        return Pinned(new, created=True, evicted=self.store(key, new))

    def store(self, key: str, pin: Pin) -> int:
        """Set unconditionally (newest expiry); returns how many pins the cap and quota evicted."""
        now = self.clock()
        self._entries[key] = (pin, now + self.ttl)
        self._entries.move_to_end(key)
        self._drop_expired(now)
        evicted = 0
        if self.quotas.enabled:
            evicted += self._within_quota(key)
        while len(self._entries) > self.max_entries:
            self._pop(next(iter(self._entries)))
            evicted += 1
        return evicted

    def _within_quota(self, key: str) -> int:
        """Evict the tenant's own pins closest to expiry beyond its quota (never `key`)."""
        limit = self.quotas.limit(split_key(key)[1])
        if limit <= 0:
            return 0
        keys = self._tenant(key)
        keys[key] = None
        keys.move_to_end(key)
        evicted = 0
        while len(keys) > limit:
            self._pop(next(iter(keys)))
            evicted += 1
        return evicted

    def _tenant(self, key: str) -> OrderedDict[str, None]:
        tag = split_key(key)[1]
        keys = self._tenants.get(tag)
        if keys is None:
            keys = self._tenants[tag] = OrderedDict()
        return keys

    def _pop(self, key: str) -> bool:
        found = self._entries.pop(key, None) is not None
        if self._tenants:
            tag = split_key(key)[1]
            keys = self._tenants.get(tag)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self._tenants[tag]
        return found

    def drain(self, limit: int) -> list[tuple[str, Pin]]:
        """Remove and return up to `limit` live pins, closest to expiry first."""
        self._drop_expired(self.clock())
        taken: list[tuple[str, Pin]] = []
        while self._entries and len(taken) < limit:
            key = next(iter(self._entries))
            taken.append((key, self._entries[key][0]))
            self._pop(key)
        return taken

    def remove(self, key: str) -> bool:
        return self._pop(key)

    def __len__(self) -> int:
        self._drop_expired(self.clock())
        return len(self._entries)

    def _drop_expired(self, now: float) -> None:
        while self._entries:
            key, (_, expires) = next(iter(self._entries.items()))
            if expires > now:
                return
            self._pop(key)

    async def get(self, key: str, session: str | None = None, *, touch: bool = True) -> Lookup:
        return Lookup(self.lookup(key, touch=touch))  # one process lists its lanes by LaneIndex

    async def pin(self, key: str, pin: Pin, lane: LaneRef | None = None) -> Pinned:
        return self.put(key, pin)

    async def repin(self, key: str, old: Pin, new: Pin, lane: LaneRef | None = None) -> Pinned:
        return self.replace(key, old, new)

    async def delete(self, key: str) -> Removal:
        return Removal(self.remove(key))

    # One process holds every lane it pinned, and the decider's LaneIndex lists them.
    async def lanes(self, session: str) -> list[str] | None:
        return []

    async def forget_lanes(self, session: str) -> None:
        return None

    async def count(self) -> int:
        return len(self)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self._tenants.clear()

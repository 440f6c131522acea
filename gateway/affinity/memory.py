"""Per-process pins with a TTL and a cap (also the Redis store's fail-open cache)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.affinity.base import Lookup, Pin, Pinned, Removal


class MemoryStore:
    """Pins in an OrderedDict kept in expiry order.

    Every pin gets the same TTL and a refresh moves it to the end, so the front is always the pin
    closest to expiry: expiring and evicting are both pops from the front, O(1).
    """

    name = "memory"

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int,
        refresh: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.refresh = refresh
        self.clock = clock
        self._entries: OrderedDict[str, tuple[Pin, float]] = OrderedDict()

    def lookup(self, key: str) -> Pin | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        pin, expires = entry
        now = self.clock()
        if expires <= now:
            del self._entries[key]
            return None
        if self.refresh:
            self._entries[key] = (pin, now + self.ttl)
            self._entries.move_to_end(key)
        return pin

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
        """Set unconditionally (newest expiry); returns how many pins the cap evicted."""
        now = self.clock()
        self._entries[key] = (pin, now + self.ttl)
        self._entries.move_to_end(key)
        self._drop_expired(now)
        evicted = 0
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            evicted += 1
        return evicted

    def drain(self, limit: int) -> list[tuple[str, Pin]]:
        """Remove and return up to `limit` live pins, closest to expiry first."""
        self._drop_expired(self.clock())
        taken: list[tuple[str, Pin]] = []
        while self._entries and len(taken) < limit:
            key, (pin, _) = self._entries.popitem(last=False)
            taken.append((key, pin))
        return taken

    def remove(self, key: str) -> bool:
        return self._entries.pop(key, None) is not None

    def __len__(self) -> int:
        self._drop_expired(self.clock())
        return len(self._entries)

    def _drop_expired(self, now: float) -> None:
        while self._entries:
            _, (_, expires) = next(iter(self._entries.items()))
            if expires > now:
                return
            self._entries.popitem(last=False)

    async def get(self, key: str) -> Lookup:
        return Lookup(self.lookup(key))

    async def pin(self, key: str, pin: Pin) -> Pinned:
        return self.put(key, pin)

    async def repin(self, key: str, old: Pin, new: Pin) -> Pinned:
        return self.replace(key, old, new)

    async def delete(self, key: str) -> Removal:
        return Removal(self.remove(key))

    async def count(self) -> int:
        return len(self)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()

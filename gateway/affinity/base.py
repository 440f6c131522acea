"""The store protocol, pin values and affinity ids."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import BadRequest

_VALID_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


@dataclass(frozen=True, slots=True)
class Pin:
    """What a session is pinned to: the model and the route that chose it."""

    model: str
    route: str | None = None

    def encode(self) -> str:
        return f"{self.model}\t{self.route or ''}"

    @classmethod
    def decode(cls, raw: str | bytes) -> Pin:
        text = raw.decode() if isinstance(raw, bytes) else raw
        model, _, route = text.partition("\t")
        return cls(model, route or None)


@dataclass(frozen=True, slots=True)
class Lookup:
    pin: Pin | None
    degraded: bool = False  # answered by the replica's local cache because the shared store is down


@dataclass(frozen=True, slots=True)
class Pinned:
    pin: Pin  # the winner: ours, or the one another replica wrote first
    created: bool
    evicted: int = 0
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class Removal:
    found: bool
    degraded: bool = False  # the shared store is down: only the replica's local copy went


class AffinityStore(Protocol):
    """Get-or-pin over opaque keys (see `pin_key`). Implementations must be first-writer-wins."""

    name: str

    async def get(self, key: str) -> Lookup: ...

    async def pin(self, key: str, pin: Pin) -> Pinned: ...

    async def repin(self, key: str, old: Pin, new: Pin) -> Pinned:
        """Compare-and-set: `new` replaces the pin only while it still equals `old` (or the pin
        has lapsed); otherwise the current pin comes back with created=False."""
        ...

    async def delete(self, key: str) -> Removal: ...

    async def count(self) -> int: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...


def validate_affinity_id(raw: str, where: str = "X-Model-Affinity") -> str:
    """`where`: what the client sent the id in (the header, or the admin path's parameter)."""
    if not _VALID_ID.fullmatch(raw):
        raise BadRequest(
            f"{where} must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ / + = -",
            code="invalid_affinity_id",
            param=where,
        )
    return raw


def pin_key(tenant: str, affinity_id: str, lane: str = "") -> str:
    """A fixed-size key from tenant, session id and lane (SPEC 4a: a pin is per session and
    lane): odd ids cannot collide, inject or leak into Redis. No lane: the session's own key."""
    text = f"{tenant}\0{affinity_id}\0{lane}" if lane else f"{tenant}\0{affinity_id}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

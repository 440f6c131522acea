"""The store protocol, pin values and affinity ids."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway.config import Config
from gateway.errors import BadRequest

_VALID_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


StoreState = Literal["up", "degraded"]


@dataclass(frozen=True, slots=True)
class Pin:
    """What a session is pinned to: the model and the route that chose it.

    A pin read from Redis also carries where it stands there (not part of what it is, so not
    compared), kept as read and parsed only when wanted: its expiry (ms, Redis clock) and the
    store epoch it was written in, which is how a replica tells a pin Redis lost (restarted
    empty: write it back) from one it removed on purpose (see `redis.py`)."""

    model: str
    route: str | None = None
    stored: str = field(default="", compare=False)  # `expires ms<TAB>epoch<TAB>tenant tag`

    @property
    def expires_ms(self) -> int:
        head = self.stored.partition("\t")[0]
        return int(head) if head else 0

    @property
    def epoch(self) -> str:
        return self.stored.split("\t", 2)[1] if self.stored.count("\t") >= 1 else ""

    def encode(self) -> str:
        return f"{self.model}\t{self.route or ''}"

    @classmethod
    def decode(cls, raw: str | bytes) -> Pin:
        """`model<TAB>route[<TAB>expires ms<TAB>epoch<TAB>tenant tag]` (the scripts write all five)."""
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            model, route, stored = text.split("\t", 2)
        except ValueError:  # `model<TAB>route`, as a pin is encoded for the scripts
            model, _, route = text.partition("\t")
            return cls(model, route or None)
        return cls(model, route or None, stored)


# (a session's lane-less pin key, one of its lanes)
LaneRef = tuple[str, str]


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


class StoreRejected(Exception):
    """Redis refused the gateway at start: a wrong password, a missing ACL permission, or a URL
    its client cannot serve. A config error: `serve` exits with this message."""


@dataclass(frozen=True, slots=True)
class Quotas:
    """Per-tenant caps on pins, by tenant tag (see `tenant_tag`); 0 is no cap."""

    default: int = 0
    overrides: Mapping[str, int] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.default > 0 or any(self.overrides.values())

    def limit(self, tag: str) -> int:
        return self.overrides.get(tag, self.default)

    @classmethod
    def from_config(cls, config: Config) -> Quotas:
        """`routing.session_max_entries_per_tenant`, and `auth.keys[].max_pins` for a key's tenant."""
        overrides = {tenant_tag(key.tenant): key.max_pins for key in config.auth.keys
                     if key.max_pins is not None}
        return cls(config.routing.session_max_entries_per_tenant, overrides)


class AffinityStore(Protocol):
    """Get-or-pin over opaque keys (see `pin_key`). Implementations must be first-writer-wins."""

    name: str
    state: StoreState  # "degraded": the shared store is not answering (fail-open)

    async def get(self, key: str, session: str | None = None, *, touch: bool = True) -> Lookup:
        """`session`: the lane-less key of the session the pin is a lane of, whose lane listing
        a sliding TTL keeps alive with it. `touch=False`: a look that leaves a sliding TTL as
        it is (the admin API's)."""
        ...

    async def pin(self, key: str, pin: Pin, lane: LaneRef | None = None) -> Pinned:
        """`lane`: (the session's lane-less key, the lane), for a store that lists a session's
        lanes to every replica (see `lanes`)."""
        ...

    async def repin(self, key: str, old: Pin, new: Pin, lane: LaneRef | None = None) -> Pinned:
        """Compare-and-set: `new` replaces the pin only while it still equals `old` (or the pin
        has lapsed); otherwise the current pin comes back with created=False. `lane` as for
        `pin`: the moved pin's lane stays listed as long as it lives."""
        ...

    async def delete(self, key: str) -> Removal: ...

    async def lanes(self, session: str) -> list[str] | None:
        """The lanes pinned for a session (its lane-less `pin_key`), oldest first, as far as the
        store keeps them for every replica; None when it cannot tell (Redis down)."""
        ...

    async def forget_lanes(self, session: str) -> None: ...

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


def pin_key(tenant: str, affinity_id: str, lane: str = "", tag: str | None = None) -> str:
    """A fixed-size key from tenant, session id and lane (SPEC 4a: a pin is per session and
    lane), `<digest>:<tenant tag>`: odd ids cannot collide, inject or leak into Redis, and the
    store can find the tenant's quota and index. No lane: the session's own key. `tag`:
    `tenant_tag(tenant)`, when the caller keeps it."""
    text = f"{tenant}\0{affinity_id}\0{lane}" if lane else f"{tenant}\0{affinity_id}"
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return f"{digest}:{tag or tenant_tag(tenant)}"


def tenant_tag(tenant: str) -> str:
    return hashlib.blake2b(tenant.encode(), digest_size=6).hexdigest()


def split_key(key: str) -> tuple[str, str]:
    """(pin digest, tenant tag) of a `pin_key`; a bare key has no tenant tag."""
    digest, _, tag = key.partition(":")
    return digest, tag

"""Model affinity: pins from a session id to the model chosen on its first turn."""

from gateway.affinity.base import (
    AffinityStore,
    LaneRef,
    Lookup,
    Pin,
    Pinned,
    Quotas,
    Removal,
    StoreRejected,
    pin_key,
    validate_affinity_id,
)
from gateway.affinity.memory import MemoryStore

__all__ = [
    "AffinityStore",
    "LaneRef",
    "Lookup",
    "MemoryStore",
    "Pin",
    "Pinned",
    "Quotas",
    "Removal",
    "StoreRejected",
    "pin_key",
    "validate_affinity_id",
]

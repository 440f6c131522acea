"""MemoryStore with an injected clock: TTL, sliding TTL, the cap, first writer wins, repin."""

from __future__ import annotations

import re

import pytest

from gateway.affinity import MemoryStore, Pin, Removal, pin_key, validate_affinity_id
from gateway.affinity.base import Quotas, tenant_tag
from gateway.errors import BadRequest
from tests.support import run

A = Pin("openai/gpt-4o", "complex_reasoning")
B = Pin("vllm/coder", "code_generation")
C = Pin("openai/gpt-4o-mini", None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(ttl: float = 10, cap: int = 100, refresh: bool = False) -> tuple[MemoryStore, Clock]:
    clock = Clock()
    return MemoryStore(ttl, cap, refresh=refresh, clock=clock), clock


def test_first_writer_wins() -> None:
    memory, _ = store()
    first = run(memory.pin("k", A))
    second = run(memory.pin("k", B))
    assert (first.pin, first.created) == (A, True)
    assert (second.pin, second.created) == (A, False)
    assert run(memory.get("k")).pin == A
    assert not run(memory.get("k")).degraded


def test_fixed_ttl_lapses_from_the_pin_even_when_hit() -> None:
    memory, clock = store(ttl=10)
    run(memory.pin("k", A))
    clock.now += 9.9
    assert run(memory.get("k")).pin == A  # a hit does not extend a fixed TTL
    clock.now += 0.1
    assert run(memory.get("k")).pin is None
    assert run(memory.pin("k", B)).created  # a lapsed session pins afresh


def test_sliding_ttl_restarts_on_every_hit() -> None:
    memory, clock = store(ttl=10, refresh=True)
    run(memory.pin("k", A))
    for _ in range(5):  # 45 s in all, far past the original TTL
        clock.now += 9
        assert run(memory.get("k")).pin == A
    clock.now += 10
    assert run(memory.get("k")).pin is None


def test_a_look_without_touch_leaves_a_sliding_ttl_alone() -> None:
    memory, clock = store(ttl=10, refresh=True)
    run(memory.pin("k", A))
    clock.now += 9
    assert run(memory.get("k", touch=False)).pin == A  # seen, as the admin API sees it
    clock.now += 1
    assert run(memory.get("k")).pin is None  # the look did not extend the session


def test_cap_evicts_the_pin_closest_to_expiry() -> None:
    memory, clock = store(ttl=10, cap=3, refresh=True)
    for name in ("a", "b", "c"):
        run(memory.pin(name, A))
        clock.now += 1
    run(memory.get("a"))  # sliding: "a" now expires last, so "b" is closest to expiry
    result = run(memory.pin("d", B))
    assert result.evicted == 1
    assert run(memory.get("b")).pin is None
    assert [run(memory.get(name)).pin for name in ("a", "c", "d")] == [A, A, B]
    assert run(memory.count()) == 3


def test_cap_with_fixed_ttl_evicts_the_oldest_pin() -> None:
    memory, clock = store(ttl=10, cap=2)
    run(memory.pin("a", A))
    clock.now += 1
    run(memory.pin("b", A))
    run(memory.get("a"))  # a fixed-TTL hit does not change who expires first
    assert run(memory.pin("c", A)).evicted == 1
    assert run(memory.get("a")).pin is None
    assert run(memory.get("b")).pin == A


def test_expired_pins_are_dropped_before_the_cap_counts() -> None:
    memory, clock = store(ttl=10, cap=2)
    run(memory.pin("a", A))
    run(memory.pin("b", A))
    clock.now += 11
    assert run(memory.pin("c", B)).evicted == 0  # "a" and "b" lapsed: nothing live evicted
    assert run(memory.count()) == 1


def test_delete_and_count() -> None:
    memory, _ = store()
    run(memory.pin("a", A))
    run(memory.pin("b", B))
    assert run(memory.count()) == 2
    assert run(memory.delete("a")) == Removal(found=True)
    assert run(memory.delete("a")) == Removal(found=False)
    assert run(memory.get("a")).pin is None
    assert run(memory.count()) == 1


def test_repin_replaces_only_the_expected_pin() -> None:
    memory, clock = store(ttl=10)
    run(memory.pin("k", A))
    clock.now += 5
    stale = run(memory.repin("k", B, C))  # the caller's view (B) is out of date
    assert (stale.pin, stale.created) == (A, False)
    moved = run(memory.repin("k", A, B))
    assert (moved.pin, moved.created) == (B, True)
    assert run(memory.get("k")).pin == B
    clock.now += 9  # the replacement starts a fresh TTL
    assert run(memory.get("k")).pin == B
    again = run(memory.repin("k", A, C))  # a second reroute from the same old pin loses
    assert (again.pin, again.created) == (B, False)


def test_repin_of_a_lapsed_pin_pins_the_new_model() -> None:
    memory, clock = store(ttl=10)
    run(memory.pin("k", A))
    clock.now += 11
    result = run(memory.repin("k", A, B))
    assert (result.pin, result.created) == (B, True)


def test_pin_values_round_trip() -> None:
    for pin in (A, C, Pin("a/b:c", "route with spaces")):
        assert Pin.decode(pin.encode()) == pin
        assert Pin.decode(pin.encode().encode()) == pin


def test_pin_key_separates_tenants_and_cannot_be_injected() -> None:
    keys = {pin_key("team-a", "s1"), pin_key("team-b", "s1"), pin_key("team-a", "s2"),
            pin_key("team-a\0s", "1"), pin_key("", "team-a\0s1")}
    assert len(keys) == 5
    assert all(re.fullmatch(r"[0-9a-f]{32}:[0-9a-f]{12}", key) for key in keys)
    assert pin_key("team-a", "s1") == pin_key("team-a", "s1")


@pytest.mark.parametrize("raw", ["", "x" * 129, "has space", "ünï", "a\nb", "{tag}"])
def test_bad_ids_are_rejected(raw: str) -> None:
    with pytest.raises(BadRequest) as info:
        validate_affinity_id(raw)
    assert info.value.code == "invalid_affinity_id"


def test_good_ids_pass() -> None:
    for raw in ("x", "x" * 128, "user@example.com/sess:1+2=3-4_5.6"):
        assert validate_affinity_id(raw) == raw


def test_drain_takes_live_pins_closest_to_expiry_first() -> None:
    memory, clock = store(ttl=10)
    run(memory.pin("lapsed", A))
    clock.now += 5
    for name in ("a", "b", "c"):
        run(memory.pin(name, B))
        clock.now += 1
    clock.now += 3  # "lapsed" is past its TTL now; "a" has 4 s left
    assert memory.drain(2) == [("a", B), ("b", B)]
    assert memory.drain(5) == [("c", B)]
    assert memory.drain(5) == []
    assert run(memory.count()) == 0


def test_a_sliding_hit_of_a_tenant_without_a_quota_beside_one_with_a_quota() -> None:
    """Only tenants with a quota are indexed: a hit of another tenant's pin found no index entry
    to move (KeyError: every later turn of that tenant was a 500)."""
    quotas = Quotas(0, {tenant_tag("a"): 5})
    memory = MemoryStore(10, 100, refresh=True, clock=Clock(), quotas=quotas)
    run(memory.pin(pin_key("a", "s"), A))
    other = pin_key("b", "s")
    assert run(memory.pin(other, B)).created
    assert run(memory.get(other)).pin == B
    assert run(memory.get(pin_key("a", "s"))).pin == A

"""Limits that need no body: header size and the per-tenant concurrency cap."""

from __future__ import annotations

import pytest

from gateway.errors import HeadersTooLarge, RateLimited
from gateway.limits import TenantConcurrency, check_header_size


def test_headers_over_the_limit_are_a_431() -> None:
    scope = {"headers": [(b"x-big", b"v" * 95)]}
    check_header_size(scope, 100)
    with pytest.raises(HeadersTooLarge) as caught:
        check_header_size(scope, 99)
    assert caught.value.status == 431


def test_each_tenant_has_its_own_cap_and_a_release_frees_a_slot() -> None:
    slots = TenantConcurrency(2)
    slots.acquire("a")
    slots.acquire("a")
    slots.acquire("b")
    with pytest.raises(RateLimited) as caught:
        slots.acquire("a")
    assert caught.value.headers == {"retry-after": "1"}
    slots.release("a")
    slots.acquire("a")
    for tenant in ("a", "a", "b"):
        slots.release(tenant)
    assert slots.inflight == {}


def test_no_cap_tracks_nothing() -> None:
    slots = TenantConcurrency(0)
    for _ in range(100):
        slots.acquire("a")
    assert slots.inflight == {}

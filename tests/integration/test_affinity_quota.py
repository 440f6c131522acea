"""Per-tenant pin quotas: beyond its quota a tenant's own pin closest to expiry is evicted,
never another tenant's, in the Redis store (in the same script as the global cap) and in the
memory store alike; the routing-decision endpoints count against the same quota."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from gateway.affinity import AffinityStore, MemoryStore, Quotas, pin_key
from gateway.affinity.base import tenant_tag
from gateway.affinity.redis import RedisStore
from gateway.config import ConfigError, parse_config
from tests.configs import CODE, three_models
from tests.support import RedisServer, ThreadServer, gateway, run, wait_for
from tests.unit.test_affinity_redis import A, B, routing

CAP = 30


@asynccontextmanager
async def store_of(kind: str, quotas: Quotas, redis_url: str, **options: Any) -> AsyncIterator[AffinityStore]:
    store: AffinityStore
    if kind == "memory":
        store = MemoryStore(600, CAP, quotas=quotas, **options)
    else:
        store = RedisStore(routing(redis_url, cap=CAP, **options), quotas=quotas)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["memory", "redis"])
@pytest.mark.parametrize("refresh", [False, True])
def test_a_flooding_tenant_evicts_only_its_own_pins(kind: str, refresh: bool, redis_url: str) -> None:
    async def main() -> None:
        async with store_of(kind, Quotas(default=20), redis_url, refresh=refresh) as store:
            quiet = [pin_key("quiet", f"s{n}") for n in range(10)]
            for key in quiet:
                assert (await store.pin(key, A)).created
            flood = [pin_key("flood", f"s{n}") for n in range(100)]
            evicted = 0
            for key in flood:  # 100 sessions: far past the global cap of 30
                pinned = await store.pin(key, B)
                assert pinned.created
                evicted += pinned.evicted
            assert evicted == 80
            assert [(await store.get(key)).pin for key in quiet] == [A] * 10  # every one kept
            kept = [key for key in flood if (await store.get(key)).pin == B]
            assert kept == flood[-20:]  # the flood's newest: its own closest to expiry went first
            assert await store.count() == 30

    run(main())


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_key_override_and_the_global_cap_still_apply(kind: str, redis_url: str) -> None:
    async def main() -> None:
        quotas = Quotas(default=0, overrides={tenant_tag("small"): 3})
        async with store_of(kind, quotas, redis_url) as store:
            small = [pin_key("small", f"s{n}") for n in range(10)]
            for key in small:
                await store.pin(key, A)
            assert [key for key in small if (await store.get(key)).pin] == small[-3:]
            # A tenant without a quota is held by the global cap alone, which takes the pins
            # closest to expiry whoever owns them.
            big = [pin_key("big", f"s{n}") for n in range(CAP)]
            for key in big:
                await store.pin(key, B)
            assert await store.count() == CAP
            assert [(await store.get(key)).pin for key in small] == [None] * len(small)

    run(main())


def test_redis_quota_keys_stay_bounded(redis_server: RedisServer, redis_url: str) -> None:
    async def main() -> None:
        async with store_of("redis", Quotas(default=5), redis_url) as store:
            for tenant in ("a", "b", "c"):
                for number in range(20):
                    await store.pin(pin_key(tenant, f"s{number}"), A)
            assert await store.count() == 15
            await store.delete(pin_key("a", "s19"))

    run(main())
    indexes = {key: int(redis_server.command("ZCARD", key))
               for key in redis_server.command("KEYS", "agw:{b0}:t:*")}
    assert sorted(indexes.values()) == [4, 5, 5]  # one index per tenant, within its quota
    assert int(redis_server.command("ZCARD", "agw:{b0}:idx")) == 14


def auth_config(upstream: str, redis_url: str | None) -> dict[str, Any]:
    config = three_models(upstream, redis_url, session_max_entries=CAP,
                          session_max_entries_per_tenant=20)
    config["auth"] = {"keys": [{"key": "sk-quiet-key", "tenant": "quiet"},
                               {"key": "sk-flood-key", "tenant": "flood", "max_pins": 5}],
                      "admin_keys": ["sk-admin-key"]}
    return config


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_two_tenants_one_flooding_through_the_routing_endpoint(
    kind: str, simulator: ThreadServer, redis_url: str
) -> None:
    config = auth_config(simulator.url, redis_url if kind == "redis" else None)
    with gateway(config) as replica, httpx.Client(base_url=replica.url, timeout=10) as client:
        def turn(key: str, session: str, path: str = "/v1/chat/completions") -> httpx.Response:
            response = client.post(path, headers={"X-Model-Affinity": session,
                                                  "Authorization": f"Bearer {key}"},
                                   json={"messages": [{"role": "user", "content": CODE}]})
            assert response.status_code == 200
            return response

        for number in range(20):  # the quiet tenant fills its quota of 20
            turn("sk-quiet-key", f"quiet-{number}")
        for number in range(100):  # the routing-decision endpoint calls no LLM: free to flood
            turn("sk-flood-key", f"flood-{number}", "/routing/v1/chat/completions")
        statuses = {turn("sk-quiet-key", f"quiet-{number}").headers["x-model-affinity-status"]
                    for number in range(20)}
        assert statuses == {"hit"}

        def pinned(tenant: str, session: str) -> int:
            return client.get(f"/v1/affinity/{session}", params={"tenant": tenant},
                              headers={"Authorization": "Bearer sk-admin-key"}).status_code

        assert [pinned("flood", f"flood-{n}") for n in range(100)] == [404] * 95 + [200] * 5


def test_quota_config() -> None:
    base = three_models("http://127.0.0.1:9")
    config = parse_config({**base, "routing": {**base["routing"], "session_max_entries_per_tenant": 7},
                           "auth": {"keys": [{"key": "k1", "tenant": "t", "max_pins": 3}]}},
                          environ={})
    assert config.routing.session_max_entries_per_tenant == 7
    quotas = Quotas.from_config(config)
    assert (quotas.limit(tenant_tag("t")), quotas.limit(tenant_tag("other"))) == (3, 7)
    with pytest.raises(ConfigError, match=r"auth.keys\[1\].max_pins: tenant 't' already has max_pins 3"):
        parse_config({**base, "auth": {"keys": [{"key": "k1", "tenant": "t", "max_pins": 3},
                                                {"key": "k2", "tenant": "t", "max_pins": 4}]}},
                     environ={})
    with pytest.raises(ConfigError, match="max_pins"):
        parse_config({**base, "auth": {"keys": [{"key": "k1", "max_pins": 0}]}}, environ={})


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_with_a_sliding_ttl_a_tenant_without_a_quota_beside_one_with_one_keeps_its_pins(
    kind: str, redis_url: str
) -> None:
    """Only a tenant with a quota is indexed: the hit of another tenant's pin (in the memory
    store, and in the Redis store's local copy) failed on the missing index entry, a 500 on
    every later turn of that tenant."""
    async def main() -> None:
        quotas = Quotas(overrides={tenant_tag("capped"): 5})
        async with store_of(kind, quotas, redis_url, refresh=True) as store:
            assert (await store.pin(pin_key("capped", "s"), A)).created
            free = pin_key("free", "s")
            assert (await store.pin(free, B)).created
            for _ in range(3):
                assert (await store.get(free)).pin == B

    run(main())


@pytest.mark.parametrize("refresh", [False, True])
def test_a_tenants_index_goes_when_its_last_pin_does(
    refresh: bool, redis_url: str, redis_server: RedisServer
) -> None:
    """Tenants come and go (a tenant header names them): each tenant's index in Redis expires
    with its newest pin, or every tenant ever seen would leave a key behind for good."""
    async def main() -> None:
        store = RedisStore(routing(redis_url, ttl=1, refresh=refresh), quotas=Quotas(default=2))
        await store.open()
        try:
            for n in range(20):
                await store.pin(pin_key(f"tenant-{n}", "s"), A)
            await store.get(pin_key("tenant-0", "s"))  # a hit: a sliding one moves the index too
            assert len(redis_server.command("KEYS", "*:t:*")) == 20
            assert all(0 < int(redis_server.command("PTTL", key)) <= 1000
                       for key in redis_server.command("KEYS", "*:t:*"))
        finally:
            await store.close()

    run(main())
    wait_for(lambda: redis_server.command("KEYS", "*:t:*") == [], timeout=5,
             message="tenant indexes outlived their pins")

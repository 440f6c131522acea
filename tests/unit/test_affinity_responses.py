"""The Redis response store against a real private redis-server: records per tenant, the cap
(the records closest to expiry go, however far the cap was lowered), delete."""

from __future__ import annotations

import redis

from gateway.affinity.responses import RedisResponseStore
from gateway.config import parse_config
from tests.support import RedisServer, run


def store(redis_url: str, max_entries: int) -> RedisResponseStore:
    config = parse_config({
        "model_providers": [{"model": "openai/gpt-4o", "access_key": "k"}],
        "routing": {"session_cache": {"type": "redis", "url": redis_url}},
        "responses": {"max_entries": max_entries},
    }, environ={})
    return RedisResponseStore(config)


def test_records_are_per_tenant_capped_oldest_first_and_deleted(redis_url: str) -> None:
    async def main() -> None:
        responses = store(redis_url, 3)
        await responses.open()
        try:
            for n in range(5):
                await responses.put("a", f"resp_{n}", {"n": n})
            kept = [await responses.get("a", f"resp_{n}") for n in range(5)]
            assert kept == [None, None, {"n": 2}, {"n": 3}, {"n": 4}]
            assert await responses.get("b", "resp_4") is None  # another tenant's id
            assert await responses.delete("a", "resp_4") and not await responses.delete("a", "resp_4")
            assert await responses.get("a", "resp_4") is None
        finally:
            await responses.close()
    run(main())


def test_a_cap_lowered_far_below_the_records_kept_trims_them_all(
    redis_url: str, redis_server: RedisServer
) -> None:
    """Lua's unpack has a limit (about 8,000 values): the trim must not pass it in one call."""
    responses = store(redis_url, 1)
    inspector = redis.Redis(port=redis_server.port)
    pipe = inspector.pipeline(transaction=False)
    for n in range(10_000):
        key = f"{responses.prefix}old{n}"
        pipe.set(key, b"{}", px=600_000)
        pipe.zadd(responses.index, {key: 1e15 + n})  # expiring far ahead, so not swept as expired
    pipe.execute()

    async def main() -> None:
        await responses.open()
        try:
            await responses.put("a", "resp_new", {"new": True})
            assert await responses.get("a", "resp_new") == {"new": True}
        finally:
            await responses.close()
    run(main())
    assert inspector.zcard(responses.index) == 1
    assert inspector.exists(f"{responses.prefix}old0", f"{responses.prefix}old9999") == 0

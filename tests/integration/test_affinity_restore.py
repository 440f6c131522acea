"""Pins survive Redis data loss: a replica that holds a pin Redis lost writes it back (first
writer wins), unless the pin expired, was evicted or was deleted on purpose."""

from __future__ import annotations

import asyncio
import time

import httpx

from gateway.affinity import pin_key
from tests.configs import CODE, REASON, three_models
from tests.support import RedisServer, ThreadServer, gateway, run, wait_for
from tests.unit.test_affinity_redis import A, B, C, opened, routing


def restart_empty(server: RedisServer) -> None:
    server.kill()
    server.start()  # the same port, nothing kept (--save "", no AOF)
    assert int(server.command("DBSIZE")) == 0


def test_pins_redis_lost_are_written_back_first_writer_wins(killable_redis: RedisServer) -> None:
    async def main() -> None:
        config = routing(killable_redis.url, breaker_cooldown_ms=50)
        async with opened(config) as one, opened(config) as two:
            keys = [pin_key("t", f"s{n}") for n in range(10)]
            for key in keys:
                assert (await one.pin(key, A)).created
                assert (await two.get(key)).pin == A  # both replicas hold a copy
            restart_empty(killable_redis)
            for index, key in enumerate(keys):
                replica = (one, two)[index % 2]
                lookup = await replica.get(key)
                assert (lookup.pin, lookup.degraded) == (A, False)
            assert one.restored + two.restored == len(keys)
            # Back in Redis, in a new epoch, with the original expiry: the other replica hits.
            for key in keys:
                assert (await (two if keys.index(key) % 2 == 0 else one).get(key)).pin == A
                ttl = int(killable_redis.command("PTTL", one.keys(key)[0]))
                assert 590_000 < ttl <= 600_000
            assert one.restored + two.restored == len(keys)

    run(main())


def test_a_pin_removed_on_purpose_is_not_written_back(killable_redis: RedisServer) -> None:
    async def main() -> None:
        async with opened(routing(killable_redis.url, cap=2)) as store, \
                opened(routing(killable_redis.url, cap=2)) as admin:
            evicted, kept, newest = (pin_key("t", name) for name in ("evicted", "kept", "newest"))
            for key in (evicted, kept, newest):
                await store.pin(key, A)
            # Evicted by the cap (the same epoch): gone for every replica, this one included.
            assert (await store.get(evicted)).pin is None
            assert int(killable_redis.command("EXISTS", store.keys(evicted)[0])) == 0
            # Deleted through another replica: this one's copy does not bring it back.
            assert (await admin.delete(kept)).found
            assert (await store.get(kept)).pin is None
            # Deleted after Redis lost everything (a new epoch): the marker keeps it deleted.
            restart_empty(killable_redis)
            assert not (await admin.delete(newest)).found  # Redis had lost it; this replica held none
            assert (await store.get(newest)).pin is None
            assert store.restored == 0
            assert (await store.pin(newest, B)).pin == B  # a new pin for the session is free to form

    run(main())


def test_a_pin_past_its_ttl_stays_expired(killable_redis: RedisServer) -> None:
    async def main() -> None:
        async with opened(routing(killable_redis.url, ttl=1)) as one, \
                opened(routing(killable_redis.url, ttl=1)) as two:
            key = pin_key("t", "s")
            await one.pin(key, C)
            expires = time.monotonic() + 1.0
            await asyncio.sleep(0.5)
            assert (await two.get(key)).pin == C  # two's copy would outlive the pin by 0.5 s
            restart_empty(killable_redis)
            await asyncio.sleep(max(0.0, expires - time.monotonic()) + 0.05)
            assert two.local.lookup(key) == C  # still held here...
            assert (await two.get(key)).pin is None  # ...but past its TTL: not written back
            assert int(killable_redis.command("EXISTS", two.keys(key)[0])) == 0

    run(main())


def test_a_hit_costs_one_get_and_nothing_more(killable_redis: RedisServer) -> None:
    async def main() -> None:
        async with opened(routing(killable_redis.url)) as store:
            key = pin_key("t", "s")
            await store.pin(key, A)
            killable_redis.command("CONFIG", "RESETSTAT")
            for _ in range(50):
                assert (await store.get(key)).pin == A
        stats = killable_redis.command("INFO", "commandstats")  # the inspector's own aside
        calls = {name: value["calls"] for name, value in stats.items()
                 if name not in ("cmdstat_hello", "cmdstat_config|resetstat")}
        assert calls == {"cmdstat_get": 50}

    run(main())


def test_redis_restarted_empty_under_two_replicas(
    simulator: ThreadServer, killable_redis: RedisServer
) -> None:
    config = three_models(simulator.url, killable_redis.url)
    config["routing"]["session_cache"]["breaker_cooldown_ms"] = 200
    sessions = [f"session-{n}" for n in range(20)]
    with gateway(config) as one, gateway(config) as two, httpx.Client(timeout=10) as client:
        replicas = (one, two)
        served: dict[str, set[str]] = {session: set() for session in sessions}
        statuses: list[str] = []

        def turn(session: str, number: int, replica: ThreadServer) -> httpx.Response:
            """Turns alternate intent: a session routed afresh would switch models."""
            response = client.post(
                f"{replica.url}/v1/chat/completions", headers={"X-Model-Affinity": session},
                json={"messages": [{"role": "user", "content": CODE if number % 2 else REASON}]})
            assert response.status_code == 200
            if session in served:
                served[session].add(response.headers["x-gateway-model"])
            statuses.append(response.headers["x-model-affinity-status"])
            return response

        for number in range(3):  # every session on both replicas, so both hold every pin
            for index, session in enumerate(sessions):
                turn(session, number, replicas[(index + number) % 2])
        turn("deleted", 1, one)
        turn("deleted", 2, two)

        killable_redis.kill()
        for index, session in enumerate(sessions[:5]):  # some turns during the outage
            assert turn(session, 3, replicas[index % 2]).headers["x-model-affinity-status"] == "degraded"
        # An admin DELETE during the outage: a 503 (Redis could not confirm it), yet it is done
        # when Redis is back, though the other replica still holds a copy of the pin.
        assert client.delete(f"{one.url}/v1/affinity/deleted").status_code == 503
        killable_redis.start()  # back, empty

        def up(replica: ThreadServer) -> bool:
            turn("probe", 0, replica)  # a request lets the breaker probe
            return bool(client.get(f"{replica.url}/readyz").json()["affinity_store"] == "up")

        wait_for(lambda: up(one) and up(two), timeout=10, message="Redis did not come back")
        statuses.clear()
        for number in range(4, 8):
            for index, session in enumerate(sessions):
                turn(session, number, replicas[(index + number) % 2])
        assert set(statuses) == {"hit"}, "a session lost its pin"
        for session in sessions:
            assert len(served[session]) == 1, f"{session} served by {served[session]}"
        # The deleted session is routed afresh on the replica that still held a copy.
        assert turn("deleted", 3, two).headers["x-model-affinity-status"] == "new"
        assert client.get(f"{one.url}/v1/affinity/deleted").json()["model"] == "vllm/coder"
        # A DELETE after the return, through the replica that holds the new pin, removes it
        # everywhere: the other replica's copy is not written back either.
        assert client.delete(f"{two.url}/v1/affinity/deleted").status_code == 200
        assert turn("deleted", 4, one).headers["x-model-affinity-status"] == "new"

"""RedisStore against a real private redis-server: races across tasks and processes, TTLs, the
cap, tenants, one command per request, delete, count and repin."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio

from gateway.affinity import Pin, Removal, pin_key
from gateway.affinity.redis import RedisStore
from gateway.config.schema import RoutingConfig, SessionCacheConfig
from tests.configs import CODE, REASON, three_models
from tests.support import RedisServer, ThreadServer, free_port, gateway, run

A = Pin("openai/gpt-4o", "complex_reasoning")
B = Pin("vllm/coder", "code_generation")
C = Pin("openai/gpt-4o-mini", None)


def routing(
    url: str, ttl: int = 600, cap: int = 10_000, refresh: bool = False, **cache: Any
) -> RoutingConfig:
    # A roomy socket timeout unless a test is about timeouts: on a loaded 2-core machine the
    # default 100 ms can lapse, which fails open (degraded), correctly but beside the point.
    cache.setdefault("socket_timeout_ms", 1000)
    return RoutingConfig(
        session_ttl_seconds=ttl, session_max_entries=cap, session_ttl_refresh=refresh,
        session_cache=SessionCacheConfig(type="redis", url=url, **cache),
    )


@asynccontextmanager
async def opened(config: RoutingConfig) -> AsyncIterator[RedisStore]:
    store = RedisStore(config)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def eventually(
    condition: Callable[[], Awaitable[Any]], timeout: float = 5.0, message: str = ""
) -> Any:
    """The async twin of support.wait_for: poll a coroutine until truthy, fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (result := await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(message or "condition not met before the deadline")
        await asyncio.sleep(0.01)
    return result


# --- first writer wins under a real race ------------------------------------------------------

TASKS = 16
PROCESSES = 3
KEYS = [pin_key("race", f"session-{n}") for n in range(40)]


def race_worker(url: str, index: int, ready: Any, start: Any, results: Any) -> None:
    """One OS process: TASKS asyncio tasks pinning every key, each with its own model."""

    async def main() -> list[tuple[str, bool, str, str]]:
        async with opened(routing(url)) as store:
            # Open the pool's connections and load the script before the start signal.
            await asyncio.gather(*(store.ping() for _ in range(TASKS)))
            await store.pin(pin_key("warm", str(index)), A)
            ready.put(index)
            start.wait(30)

            async def task(number: int) -> list[tuple[str, bool, str, str]]:
                mine = Pin(f"model-{index}-{number}", "r")
                order = random.Random(index * 1000 + number).sample(KEYS, len(KEYS))
                seen = []
                for key in order:
                    result = await store.pin(key, mine)
                    assert not result.degraded
                    seen.append((key, result.created, result.pin.model, mine.model))
                return seen

            batches = await asyncio.gather(*(task(n) for n in range(TASKS)))
            return [row for batch in batches for row in batch]

    results.put(asyncio.run(main()))


def test_first_writer_wins_across_tasks_and_processes(redis_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(target=race_worker, args=(redis_url, n, ready, start, results))
        for n in range(PROCESSES)
    ]
    rows: list[tuple[str, bool, str, str]] = []
    try:
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.get(timeout=30)
        start.set()
        for _ in workers:
            rows.extend(results.get(timeout=60))
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
                worker.join()
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    assert len(rows) == PROCESSES * TASKS * len(KEYS)
    creators_seen = set()
    for key in KEYS:
        calls = [row for row in rows if row[0] == key]
        created = [row for row in calls if row[1]]
        assert len(created) == 1, f"{len(created)} callers created {key}"
        winner = created[0][3]
        assert created[0][2] == winner
        assert {row[2] for row in calls} == {winner}  # every caller serves the winner
        creators_seen.add(winner.rsplit("-", 1)[0])
    # The race was real: the winners came from more than one process.
    assert len(creators_seen) > 1


def test_first_writer_wins_between_two_replicas_in_one_loop(redis_url: str) -> None:
    async def main() -> None:
        async with opened(routing(redis_url)) as one, opened(routing(redis_url)) as two:
            key = pin_key("t", "s")
            results = await asyncio.gather(*(
                (one if n % 2 else two).pin(key, Pin(f"m{n}")) for n in range(50)
            ))
            assert sum(result.created for result in results) == 1
            assert len({result.pin for result in results}) == 1
            assert (await two.get(key)).pin == (await one.get(key)).pin == results[0].pin

    run(main())


# --- TTL --------------------------------------------------------------------------------------


def test_fixed_ttl_lapses_from_the_pin(redis_url: str) -> None:
    async def main() -> float:
        async with opened(routing(redis_url, ttl=1)) as store:
            key = pin_key("t", "fixed")
            started = time.monotonic()
            assert (await store.pin(key, A)).created
            assert (await store.get(key)).pin == A  # hits do not extend a fixed TTL

            async def lapsed() -> bool:
                return (await store.get(key)).pin is None

            await eventually(lapsed, timeout=3, message="a fixed 1 s pin did not lapse")
            elapsed = time.monotonic() - started
            assert (await store.pin(key, B)).created  # the session pins afresh
            assert await store.count() == 1
            return elapsed

    elapsed = run(main())
    assert 0.9 <= elapsed < 2.0


def test_sliding_ttl_restarts_on_every_hit(redis_url: str, redis_server: RedisServer) -> None:
    async def main() -> float:
        async with opened(routing(redis_url, ttl=1, refresh=True)) as store:
            key = pin_key("t", "sliding")
            redis_key, index_key = store.keys(key)
            await store.pin(key, A)
            started = time.monotonic()
            while time.monotonic() - started < 2.0:  # hit for twice the TTL
                await asyncio.sleep(0.3)
                assert (await store.get(key)).pin == A
                assert int(redis_server.command("PTTL", redis_key)) > 900  # restored on the hit
            last_hit = time.monotonic()
            score = float(redis_server.command("ZSCORE", index_key, redis_key))
            now_ms = float(redis_server.command("TIME")[0]) * 1000
            assert score > now_ms + 500  # the index follows, so the cap sees the new expiry

            async def lapsed() -> bool:
                return int(redis_server.command("EXISTS", redis_key)) == 0

            await eventually(lapsed, timeout=3, message="a sliding pin did not lapse once idle")
            return time.monotonic() - last_hit

    assert run(main()) >= 0.9


# --- the cap, tenants, one command per request ------------------------------------------------


def test_key_count_stays_within_the_cap(redis_url: str, redis_server: RedisServer) -> None:
    cap = 50

    async def main() -> int:
        async with opened(routing(redis_url, cap=cap)) as store:
            evicted = 0
            keys = [pin_key("t", f"s{n}") for n in range(4 * cap)]
            for number, key in enumerate(keys):
                evicted += (await store.pin(key, A)).evicted
                # the pins, the index and the epoch
                assert int(redis_server.command("DBSIZE")) <= cap + 2, f"after {number} pins"
            assert await store.count() == cap
            # The survivors are the newest pins: the ones closest to expiry went first.
            assert [(await store.get(key)).pin for key in keys[-cap:]] == [A] * cap
            evicted_keys = [store.keys(key)[0] for key in keys[:-cap]]
            assert int(redis_server.command("EXISTS", *evicted_keys)) == 0
            return evicted

    assert run(main()) == 3 * cap


def test_cap_evicts_the_pin_closest_to_expiry_with_sliding_ttl(redis_url: str) -> None:
    async def main() -> None:
        async with opened(routing(redis_url, cap=3, refresh=True)) as store:
            keys = [pin_key("t", name) for name in "abcd"]
            for key in keys[:3]:
                await store.pin(key, A)
                await asyncio.sleep(0.005)  # distinct expiry times (the index has ms scores)
            await store.get(keys[0])  # "a" slides past "b" and "c"
            await asyncio.sleep(0.005)
            assert (await store.pin(keys[3], B)).evicted == 1
            assert (await store.get(keys[1])).pin is None
            assert [(await store.get(key)).pin for key in (keys[0], keys[2], keys[3])] == [A, A, B]

    run(main())


def test_tenants_with_the_same_id_have_separate_pins(redis_url: str) -> None:
    async def main() -> None:
        async with opened(routing(redis_url)) as store:
            team_a, team_b = pin_key("team-a", "session-1"), pin_key("team-b", "session-1")
            assert (await store.pin(team_a, A)).created
            assert (await store.pin(team_b, B)).created  # not a hit on team-a's pin
            assert (await store.get(team_a)).pin == A
            assert (await store.get(team_b)).pin == B
            assert (await store.delete(team_b)).found
            assert (await store.get(team_a)).pin == A

    run(main())


class Monitor:
    """Top-level commands as the server receives them (MONITOR tags a script's own calls with
    `lua`, so those are left out: they are not round trips)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.buffer = b""
        assert self._line() == "+OK"
        self.marker = redis.Redis(port=port)

    def _line(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "monitor connection closed"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode()

    def commands(self) -> list[str]:
        """Everything received since the last call, up to a marker sent now."""
        token = f"marker-{time.monotonic_ns()}"
        self.marker.echo(token)
        seen = []
        while token not in (line := self._line()):
            if "[0 lua]" not in line and "] " in line:
                seen.append(line.split("] ", 1)[1].split(" ", 1)[0].strip('"').upper())
        return seen

    def close(self) -> None:
        self.sock.close()
        self.marker.close()


def test_the_pinned_path_costs_one_command(redis_url: str, redis_server: RedisServer) -> None:
    monitor = Monitor(redis_server.port)

    async def measure(action: Callable[[], Awaitable[Any]]) -> list[str]:
        await action()  # warm: connection open, script loaded
        monitor.commands()
        for _ in range(20):
            await action()
        return monitor.commands()

    async def main() -> None:
        key = pin_key("t", "s")
        async with opened(routing(redis_url)) as fixed:
            await fixed.pin(key, A)
            assert await measure(lambda: fixed.get(key)) == ["GET"] * 20
            fresh = iter([pin_key("t", f"new-{n}") for n in range(100)])
            assert await measure(lambda: fixed.pin(next(fresh), B)) == ["EVALSHA"] * 20
            assert await measure(lambda: fixed.pin(key, B)) == ["EVALSHA"] * 20  # race lost
        async with opened(routing(redis_url, refresh=True)) as sliding:
            assert await measure(lambda: sliding.get(key)) == ["EVALSHA"] * 20

    try:
        run(main())
    finally:
        monitor.close()


def test_a_request_through_a_replica_costs_one_command_when_pinned(
    redis_url: str, redis_server: RedisServer, simulator: ThreadServer
) -> None:
    monitor = Monitor(redis_server.port)
    try:
        with gateway(three_models(simulator.url, redis_url)) as replica, \
                httpx.Client(base_url=replica.url, timeout=10) as client:

            def turn(session: str, text: str) -> str:
                response = client.post(
                    "/v1/chat/completions", headers={"X-Model-Affinity": session},
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
                )
                assert response.status_code == 200
                return response.headers["x-model-affinity-status"]

            assert turn("warm", CODE) == "new"  # connections open, scripts loaded
            monitor.commands()
            assert turn("one", CODE) == "new"
            assert monitor.commands() == ["GET", "EVALSHA"]  # a miss, then get-or-pin
            assert [turn("one", REASON if n % 2 else CODE) for n in range(10)] == ["hit"] * 10
            assert monitor.commands() == ["GET"] * 10
    finally:
        monitor.close()


def test_a_fixed_ttl_hit_is_one_get_in_the_server_stats(
    redis_url: str, redis_server: RedisServer
) -> None:
    inspector = redis.Redis(port=redis_server.port, decode_responses=True)

    async def main() -> dict[str, int]:
        async with opened(routing(redis_url)) as store:
            key = pin_key("t", "s")
            await store.pin(key, A)
            await store.get(key)
            inspector.config_resetstat()
            for _ in range(25):
                assert (await store.get(key)).pin == A
            stats = inspector.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if not name.startswith(("cmdstat_info", "cmdstat_config"))
        }

    try:
        assert run(main()) == {"get": 25}
    finally:
        inspector.close()


# --- delete, count, repin ---------------------------------------------------------------------


def test_delete_and_count(redis_url: str, redis_server: RedisServer) -> None:
    async def main() -> None:
        async with opened(routing(redis_url)) as store:
            keys = [pin_key("t", f"s{n}") for n in range(5)]
            for key in keys:
                await store.pin(key, A)
            assert await store.count() == 5
            assert await store.delete(keys[0]) == Removal(found=True)
            assert await store.delete(keys[0]) == Removal(found=False)
            assert (await store.get(keys[0])).pin is None  # not served from the local cache
            assert await store.count() == 4
            assert int(redis_server.command("ZCARD", store.keys(keys[0])[1])) == 4
            assert (await store.pin(keys[0], B)).created

    run(main())


# --- a session's lanes, listed to every replica ------------------------------------------------


async def pin_lanes(store: RedisStore, tenant: str, session: str, lanes: list[str]) -> None:
    for lane in lanes:
        pinned = await store.pin(pin_key(tenant, session, lane), A, (pin_key(tenant, session), lane))
        assert pinned.created


def test_a_sessions_lanes_are_listed_by_every_replica_and_forgotten(redis_url: str) -> None:
    async def main() -> None:
        async with opened(routing(redis_url)) as one, opened(routing(redis_url)) as two:
            session = pin_key("t", "s-1")
            await pin_lanes(one, "t", "s-1", ["model:main", "agent:a1"])
            await pin_lanes(two, "t", "s-1", ["agent:a2"])
            # a pin that already stood (another replica's, or this one's) adds nothing
            assert not (await one.pin(pin_key("t", "s-1", "agent:a1"), B, (session, "agent:x"))).created
            assert await two.lanes(session) == ["model:main", "agent:a1", "agent:a2"]  # oldest first
            assert await one.lanes(pin_key("t", "s-2")) == []
            assert await one.lanes(pin_key("other-tenant", "s-1")) == []
            await two.forget_lanes(session)
            assert await one.lanes(session) == []
    run(main())


def test_lane_sets_are_capped_like_pins(redis_url: str, redis_server: RedisServer) -> None:
    async def main() -> None:
        async with opened(routing(redis_url, cap=3)) as store:
            for n in range(5):
                await pin_lanes(store, "t", f"s-{n}", ["model:main"])
            listed = [await store.lanes(pin_key("t", f"s-{n}")) for n in range(5)]
            assert listed == [[], [], ["model:main"], ["model:main"], ["model:main"]]
            await pin_lanes(store, "t", "many", ["model:main", *(f"agent:{n}" for n in range(40))])
            lanes = await store.lanes(pin_key("t", "many"))
            # the first (the main loop: else a DELETE would miss it) and the newest 31
            assert lanes == ["model:main", *(f"agent:{n}" for n in range(9, 40))]
    run(main())
    keys = redis_server.command("KEYS", "*:s:*")
    assert len(keys) <= 3, keys  # lane sets beyond the cap are gone, not only unlisted


def test_a_sliding_hit_keeps_its_sessions_lane_listing_alive(
    redis_url: str, redis_server: RedisServer
) -> None:
    """A hit on any lane restarts the session's lane set with the pin (in the same script), so
    a long session stays listed to every replica; a fixed TTL leaves the set to its TTL."""
    async def main() -> None:
        session = pin_key("t", "long")
        lane = pin_key("t", "long", "agent:a1")
        async with opened(routing(redis_url, refresh=True)) as sliding:
            await pin_lanes(sliding, "t", "long", ["model:main", "agent:a1"])
            set_key, sets_index = sliding._lane_keys(session)
            redis_server.command("PEXPIRE", set_key, "5000")  # as if the lanes were pinned long ago
            assert (await sliding.get(lane, session)).pin == A
            assert int(redis_server.command("PTTL", set_key)) > 500_000  # the session's TTL again
            now_ms = float(redis_server.command("TIME")[0]) * 1000
            assert float(redis_server.command("ZSCORE", sets_index, set_key)) > now_ms + 500_000
            assert await sliding.lanes(session) == ["model:main", "agent:a1"]
        async with opened(routing(redis_url)) as fixed:
            redis_server.command("PEXPIRE", set_key, "5000")
            assert (await fixed.get(lane, session)).pin == A
            assert int(redis_server.command("PTTL", set_key)) <= 5000
    run(main())


def test_a_moved_pin_keeps_its_lane_listed_as_long_as_it_lives(
    redis_url: str, redis_server: RedisServer
) -> None:
    """A reroute or a follow moves a lane's pin and restarts its TTL: its session's lane set goes
    with it (else a replica that never saw the lane found no pin to list or delete)."""
    async def main() -> None:
        session = pin_key("t", "moved")
        lane = pin_key("t", "moved", "agent:sub")
        async with opened(routing(redis_url)) as store:
            await pin_lanes(store, "t", "moved", ["agent:sub"])
            set_key, _ = store._lane_keys(session)
            redis_server.command("PEXPIRE", set_key, "5000")  # pinned long ago
            moved = await store.repin(lane, A, B, (session, "agent:sub"))
            assert moved.created and moved.pin == B
            assert int(redis_server.command("PTTL", set_key)) > 500_000
            assert await store.lanes(session) == ["agent:sub"]
    run(main())


def test_a_look_without_touch_leaves_a_sliding_ttl_alone(
    redis_url: str, redis_server: RedisServer
) -> None:
    async def main() -> None:
        key = pin_key("t", "inspected")
        async with opened(routing(redis_url, refresh=True)) as store:
            await store.pin(key, A)
            redis_key, _ = store.keys(key)
            redis_server.command("PEXPIRE", redis_key, "5000")
            assert (await store.get(key, touch=False)).pin == A
            assert int(redis_server.command("PTTL", redis_key)) <= 5000
            assert (await store.get(key)).pin == A  # a request's hit slides it
            assert int(redis_server.command("PTTL", redis_key)) > 500_000
    run(main())


def test_lane_sets_in_another_bucket_take_a_second_trip(redis_url: str) -> None:
    """A cluster spreads keys over 16 buckets: a session's set is mostly in another slot than its
    lane's pin, so it is written by its own script. One server stands in for the cluster."""
    async def main() -> None:
        config = routing(redis_url, cluster=True)
        store = RedisStore(config, client=redis.asyncio.Redis.from_url(redis_url))
        await store.open()
        try:
            lanes = [f"agent:{n}" for n in range(12)]
            session = pin_key("t", "spread")
            apart = [lane for lane in lanes
                     if store.keys(pin_key("t", "spread", lane))[1] != store.keys(session)[1]]
            assert apart, "every lane landed in the session's bucket: nothing tested"
            await pin_lanes(store, "t", "spread", lanes)
            assert await store.lanes(session) == lanes
        finally:
            await store.close()
    run(main())


def test_a_cluster_no_node_of_which_answers_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    """redis-py's cluster client says so with a RedisClusterException, which is no RedisError:
    it must still mean "down" (degraded, served from the replica's cache), not a crash."""
    async def main() -> None:
        async with opened(routing(f"redis://127.0.0.1:{free_port()}", cluster=True)) as store:
            key = pin_key("t", "cluster-down")
            assert (await store.get(key)).degraded
            pinned = await store.pin(key, A)
            assert pinned.created and pinned.degraded
            assert (await store.get(key)).pin == A  # from this replica's cache
            assert store.state == "degraded"
    run(main())
    assert "unreachable at start" in caplog.text


def test_repin_is_compare_and_set(redis_url: str, redis_server: RedisServer) -> None:
    async def main() -> None:
        async with opened(routing(redis_url, ttl=100)) as store, \
                opened(routing(redis_url, ttl=100)) as other:
            key = pin_key("t", "s")
            redis_key = store.keys(key)[0]
            await store.pin(key, A)
            redis_server.command("PEXPIRE", redis_key, "5000")
            stale = await store.repin(key, B, C)
            assert (stale.pin, stale.created) == (A, False)
            moved = await store.repin(key, A, B)
            assert (moved.pin, moved.created) == (B, True)
            assert int(redis_server.command("PTTL", redis_key)) > 90_000  # a fresh TTL
            assert (await other.get(key)).pin == B  # the other replica sees it at once
            # Replicas rerouting the same failed pin at once: one wins, all agree.
            results = await asyncio.gather(
                *((store if n % 2 else other).repin(key, B, Pin(f"m{n}")) for n in range(20))
            )
            assert sum(result.created for result in results) == 1
            assert len({result.pin for result in results}) == 1
            lapsed = pin_key("t", "gone")
            result = await store.repin(lapsed, A, C)
            assert (result.pin, result.created) == (C, True)
            assert await store.count() == 2

    run(main())

"""Redis going away: the store fails open behind its breaker, and two replicas under traffic
serve every request while redis-server is killed and restarted on the same port."""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis.exceptions import RedisError

from gateway.affinity import Pin, Removal, pin_key
from tests.configs import CODE, REASON, three_models
from tests.support import RedisServer, ThreadServer, gateway, run, wait_for
from tests.unit.test_affinity_redis import A, B, C, eventually, opened, routing


def roomy(config: dict[str, Any]) -> dict[str, Any]:
    """A 1 s Redis socket timeout: a loaded machine must not make a live Redis look down."""
    config["routing"]["session_cache"]["socket_timeout_ms"] = 1000
    return config


def timed(started: float) -> float:
    return time.perf_counter() - started


# --- the store alone --------------------------------------------------------------------------


def test_store_fails_open_and_resynchronises(killable_redis: RedisServer) -> None:
    async def main() -> None:
        config = routing(killable_redis.url, breaker_cooldown_ms=200)
        async with opened(config) as store, opened(config) as other:
            seen, made = pin_key("t", "seen"), pin_key("t", "made-in-outage")
            await store.pin(seen, A)
            killable_redis.kill()
            started = time.perf_counter()
            lookup = await store.get(seen)
            assert (lookup.pin, lookup.degraded) == (A, True)  # kept from before the outage
            assert store.breaker.open
            pinned = await store.pin(made, B)
            assert (pinned.pin, pinned.created, pinned.degraded) == (B, True, True)
            again = await store.pin(made, C)  # first writer wins locally too
            assert (again.pin, again.created) == (B, False)
            assert (await store.repin(made, B, C)).pin == C
            assert (await store.get(pin_key("t", "unknown"))).pin is None
            for _ in range(1000):  # the breaker is open: no connection attempt per call
                assert (await store.get(seen)).degraded
            assert timed(started) < 0.5
            assert store.pending == 2

            killable_redis.start()  # same port, empty: nothing was persisted

            async def recovered() -> bool:
                return not (await store.get(seen)).degraded and store.pending == 0

            await eventually(recovered, timeout=5)
            # What this replica saw or pinned during the outage is in Redis for the others.
            assert (await other.get(seen)).pin == A
            assert (await other.get(made)).pin == C

    run(main())


def test_pins_awaiting_publication_are_served_while_the_flush_runs(
    killable_redis: RedisServer,
) -> None:
    """Right after recovery a request for a session pinned during the outage must get that
    pin, whether the background flush has published it yet, is publishing it, or not."""

    async def main() -> None:
        async with opened(routing(killable_redis.url, breaker_cooldown_ms=50)) as store:
            await store.ping()
            killable_redis.kill()
            keys = [pin_key("t", f"s{n}") for n in range(400)]
            models = {key: Pin(f"model-{n % 7}") for n, key in enumerate(keys)}
            for key in keys:
                assert (await store.pin(key, models[key])).degraded
            killable_redis.start()

            async def probe() -> bool:
                return not (await store.get(pin_key("t", "probe"))).degraded

            await eventually(probe, timeout=5)
            assert store.pending > 0  # the flush has only just started
            lookups = await asyncio.gather(*(store.get(key) for key in keys))
            assert [lookup.pin for lookup in lookups] == [models[key] for key in keys]
            await eventually(lambda: asyncio.sleep(0, store.pending == 0), timeout=5)
            assert int(killable_redis.command("DBSIZE")) == len(keys) + 2  # index, epoch

    run(main())


def test_the_local_copy_of_a_fixed_pin_expires_with_it(killable_redis: RedisServer) -> None:
    async def main() -> float:
        async with opened(routing(killable_redis.url, ttl=1)) as store:
            key = pin_key("t", "s")
            pinned = time.monotonic()
            await store.pin(key, A)
            while time.monotonic() - pinned < 0.8:  # hits do not extend a fixed TTL...
                assert (await store.get(key)).pin == A
                await asyncio.sleep(0.05)
            killable_redis.kill()

            async def lapsed() -> bool:
                lookup = await store.get(key)
                assert lookup.degraded
                return lookup.pin is None

            await eventually(lapsed, timeout=3)  # ...so neither does the replica's copy
            return time.monotonic() - pinned

    assert run(main()) < 1.5


def test_concurrent_failures_do_not_stretch_the_backoff(killable_redis: RedisServer) -> None:
    async def main() -> None:
        async with opened(routing(killable_redis.url, breaker_cooldown_ms=200)) as store:
            keys = [pin_key("t", f"s{n}") for n in range(50)]
            await asyncio.gather(*(store.pin(key, A) for key in keys))
            killable_redis.kill()
            results = await asyncio.gather(*(store.get(key) for key in keys))
            assert all(result.degraded and result.pin == A for result in results)
            assert store.breaker.failures == 1
            killable_redis.start()
            started = time.perf_counter()

            async def recovered() -> bool:
                return not (await store.get(keys[0])).degraded

            await eventually(recovered, timeout=5)
            assert timed(started) < 1.0  # one cooldown, not a backoff stretched by 50 failures

    run(main())


def test_a_hung_redis_costs_one_socket_timeout(killable_redis: RedisServer) -> None:
    """SIGSTOP: connections stay open but nothing answers. The first calls wait out the
    100 ms socket timeout; once the breaker opens, calls return at once."""
    process = killable_redis.process
    assert process is not None

    async def main() -> None:
        config = routing(killable_redis.url, breaker_cooldown_ms=300, socket_timeout_ms=100)
        async with opened(config) as store:
            keys = [pin_key("t", f"s{n}") for n in range(20)]
            await asyncio.gather(*(store.pin(key, A) for key in keys))
            process.send_signal(signal.SIGSTOP)
            try:
                started = time.perf_counter()
                first = await asyncio.gather(*(store.get(key) for key in keys))
                assert all(lookup.degraded and lookup.pin == A for lookup in first)
                assert timed(started) < 1.0
                started = time.perf_counter()
                for _ in range(200):
                    assert (await store.get(keys[0])).degraded
                assert timed(started) < 0.5  # at most a probe or two paid the timeout
            finally:
                process.send_signal(signal.SIGCONT)

            async def recovered() -> bool:
                return not (await store.get(keys[0])).degraded

            await eventually(recovered, timeout=5)

    run(main())


def test_a_delete_while_outage_pins_are_published_is_not_undone_by_the_publish(
    redis_url: str,
) -> None:
    async def main() -> None:
        async with opened(routing(redis_url)) as store:
            key = pin_key("t", "published-late")
            release = asyncio.Event()

            async def publishing() -> None:  # the flush after an outage, this pin in its batch
                try:
                    await release.wait()
                    await store._publish(key, A)
                finally:
                    store._publishing, store._flush = {}, None

            store._publishing = {key: A}
            store._flush = asyncio.ensure_future(publishing())
            deleting = asyncio.ensure_future(store.delete(key))
            await asyncio.sleep(0)  # the delete has started and found the pin in flight
            release.set()
            assert await deleting == Removal(found=True)
            assert (await store.get(key)).pin is None

    run(main())


def test_delete_and_count_with_redis_down(killable_redis: RedisServer) -> None:
    async def main() -> None:
        async with opened(routing(killable_redis.url)) as store:
            key = pin_key("t", "s")
            await store.pin(key, A)
            killable_redis.kill()
            # the local copy went, and the answer says that is all that went
            assert await store.delete(key) == Removal(found=True, degraded=True)
            assert (await store.get(key)).pin is None
            with pytest.raises((OSError, RedisError)):  # count is sampled, off the request path
                await store.count()

    run(main())


# --- two replicas under traffic ---------------------------------------------------------------


@dataclass
class Reply:
    replica: int
    session: str
    status: int
    model: str
    affinity: str
    started: float
    seconds: float


@dataclass
class Traffic:
    """Worker threads sending turns of sticky sessions (session i on replica i % 2)."""

    replicas: list[ThreadServer]
    sessions: list[str] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    turns: itertools.count[int] = field(default_factory=itertools.count)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, *sessions: str) -> None:
        with self.lock:
            self.sessions.extend(sessions)

    def worker(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                number = next(self.turns)
                with self.lock:
                    session = self.sessions[number % len(self.sessions)]
                    turn = self.counts[session] = self.counts.get(session, -1) + 1
                self.replies.append(self.send(client, session, turn))

    def send(self, client: httpx.Client, session: str, turn: int) -> Reply:
        """One turn; turns alternate intent, so without its pin a session would switch models."""
        replica = int(session.rsplit("-", 1)[1]) % 2
        started = time.perf_counter()
        response = client.post(
            f"{self.replicas[replica].url}/v1/chat/completions",
            json={"model": "gpt-4o-mini",
                  "messages": [{"role": "user", "content": CODE if turn % 2 else REASON}]},
            headers={"X-Model-Affinity": session},
        )
        return Reply(
            replica, session, response.status_code, response.headers.get("x-gateway-model", ""),
            response.headers.get("x-model-affinity-status", ""), started, timed(started),
        )

    def since(self, moment: float) -> list[Reply]:
        return [reply for reply in list(self.replies) if reply.started >= moment]


def test_redis_outage_under_traffic(simulator: ThreadServer, killable_redis: RedisServer) -> None:
    config = roomy(three_models(simulator.url, killable_redis.url))
    with gateway(config) as one, gateway(config) as two, ThreadPoolExecutor(6) as pool:
        traffic = Traffic([one, two])
        traffic.add(*(f"before-{n}" for n in range(30)))
        workers = [pool.submit(traffic.worker) for _ in range(6)]
        try:
            wait_for(lambda: len(traffic.replies) > 150, message="no traffic")
            killed = time.perf_counter()
            killable_redis.kill()
            traffic.add(*(f"during-{n}" for n in range(10)))
            # Every session gets served on its replica while Redis is gone, for long enough
            # that the breaker's probes fail a few times.
            wait_for(
                lambda: timed(killed) > 3.0 and {
                    r.session for r in traffic.since(killed) if r.affinity == "degraded"
                } >= set(traffic.sessions),
                timeout=20, message="not every session was served during the outage",
            )
            restarted = time.perf_counter()
            killable_redis.start()

            def recovered() -> bool:
                fresh = [r for r in traffic.since(restarted) if r.affinity in ("hit", "new")]
                return {r.replica for r in fresh} == {0, 1}

            wait_for(recovered, timeout=10, message="replicas did not leave degraded mode")
            recovery = timed(restarted)
            wait_for(lambda: len(traffic.since(restarted + recovery)) > 100)
        finally:
            traffic.stop.set()
            for worker in workers:
                worker.result(timeout=30)

        replies = list(traffic.replies)
        assert all(reply.status == 200 for reply in replies)
        assert recovery < 6.0
        during = [r for r in replies if killed <= r.started < restarted]
        assert sum(r.affinity == "degraded" for r in during) > 0.9 * len(during)
        # No per-request Redis timeout while the breaker is open.
        assert sum(reply.seconds > 1.0 for reply in replies) <= 3
        # Each session kept one model on its replica: before, during and after the outage.
        for session in traffic.sessions:
            models = {reply.model for reply in replies if reply.session == session}
            assert len(models) == 1, f"{session} served by {models}"
        pinned = {r.session: r.model for r in replies}
        assert {pinned[f"during-{n}"] for n in range(10)} <= {"vllm/coder", "openai/gpt-4o"}
        statuses = {r.affinity for r in replies if r.started > restarted + recovery}
        assert statuses <= {"hit", "new", "degraded"} and "hit" in statuses

        # Each replica counted its degraded answers (the metric, not only the header).
        for replica in (one, two):
            exposition = httpx.get(f"{replica.url}/metrics").text
            line = next(line for line in exposition.splitlines()
                        if line.startswith('gateway_affinity_events_total{event="degraded"}'))
            assert float(line.split()[-1]) > 0
        # The pins each replica saw during the outage were published: the other replica,
        # which never saw these sessions, now serves the same models.
        wait_for(lambda: int(killable_redis.command("DBSIZE")) >= len(traffic.sessions) + 1,
                 message="outage pins were not published")
        with httpx.Client(timeout=10) as client:
            for session in traffic.sessions:
                other = Traffic([two, one])  # the same session, sent to the other replica
                reply = other.send(client, session, traffic.counts[session] + 1)
                assert (reply.status, reply.affinity, reply.model) == (200, "hit", pinned[session])


def test_an_admin_delete_with_redis_down_is_a_503_not_a_false_200(
    simulator: ThreadServer, killable_redis: RedisServer
) -> None:
    with gateway(roomy(three_models(simulator.url, killable_redis.url))) as replica:
        url = f"{replica.url}/v1/affinity/admin-s"

        def turn() -> str:
            return httpx.post(f"{replica.url}/v1/chat/completions",
                              headers={"X-Model-Affinity": "admin-s"},
                              json={"messages": [{"role": "user", "content": CODE}]},
                              ).headers["x-model-affinity-status"]

        assert turn() == "new"
        killable_redis.kill()
        refused = httpx.delete(url)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "affinity_store_unavailable"
        killable_redis.start()  # empty: it keeps nothing on disk
        wait_for(lambda: turn() in ("new", "hit"), timeout=10, message="Redis did not come back")
        assert httpx.delete(url).status_code == 200
        assert httpx.get(url).status_code == 404


def test_dropped_idle_connections_are_replaced(
    simulator: ThreadServer, killable_redis: RedisServer
) -> None:
    config = roomy(three_models(simulator.url, killable_redis.url))
    with gateway(config) as replica, httpx.Client(timeout=10) as client:
        traffic = Traffic([replica, replica])
        assert traffic.send(client, "idle-0", 0).affinity == "new"
        killable_redis.command("CLIENT", "KILL", "TYPE", "normal")
        reply = traffic.send(client, "idle-0", 1)
        assert (reply.status, reply.affinity) == (200, "hit")

        killable_redis.command("CONFIG", "SET", "timeout", "1")  # Redis drops idle clients itself
        assert traffic.send(client, "idle-2", 0).affinity == "new"

        def only_this_inspector() -> bool:
            return len(str(killable_redis.command("CLIENT", "LIST")).strip().splitlines()) == 1

        wait_for(only_this_inspector, timeout=5, message="Redis kept the idle connections")
        for number in range(1, 4):
            reply = traffic.send(client, "idle-2", number)
            assert (reply.status, reply.affinity) == (200, "hit")
        assert traffic.send(client, "idle-4", 0).affinity == "new"

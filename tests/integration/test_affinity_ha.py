"""HA Redis with real processes: a Sentinel failover under traffic, and a 3-master Cluster."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import redis

from gateway.affinity import Pin, Removal, pin_key
from gateway.affinity.connection import SentinelTarget, sentinel_target
from gateway.config import parse_config
from tests.configs import CODE, REASON, three_models
from tests.support import RedisServer, ThreadServer, gateway, run, wait_for
from tests.unit.test_affinity_redis import A, B, C, eventually, opened, routing

# --- the Sentinel URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://10.0.0.1:26380,10.0.0.2:26381,10.0.0.3/mymaster",
         SentinelTarget((("10.0.0.1", 26380), ("10.0.0.2", 26381), ("10.0.0.3", 26379)),
                        "mymaster")),
        ("redis+sentinel://:s%40cret@sentinel-a:5000,sentinel-b:5001/cache/2",
         SentinelTarget((("sentinel-a", 5000), ("sentinel-b", 5001)), "cache", "s@cret", 2)),
        ("redis+sentinel://user:pw@[::1]:26380,[fe80::2]/m",
         SentinelTarget((("::1", 26380), ("fe80::2", 26379)), "m", "pw")),
        ("redis+sentinel://host", SentinelTarget((("host", 26379),), "mymaster")),
    ],
)
def test_sentinel_urls(url: str, expected: SentinelTarget) -> None:
    assert sentinel_target(url) == expected


def test_sentinel_config_block_takes_precedence() -> None:
    target = sentinel_target("redis+sentinel://a:1/url-master", ("b:2", " c:3 "), "config-master")
    assert target == SentinelTarget((("b", 2), ("c", 3)), "config-master")
    assert sentinel_target("", ("b:2",), None).master == "mymaster"
    with pytest.raises(ValueError, match="sentinel host"):
        sentinel_target("redis+sentinel:///mymaster")


# --- Sentinel -----------------------------------------------------------------------------------


class SentinelProcess:
    """`redis-server <conf> --sentinel` watching `mymaster`, with quick failure detection."""

    def __init__(self, master_port: int) -> None:
        self.port = free_low_port()
        self.dir = tempfile.mkdtemp(prefix="agw-sentinel-")
        self.conf = f"{self.dir}/sentinel.conf"
        with open(self.conf, "w") as conf:
            conf.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor mymaster 127.0.0.1 {master_port} 2\n"
                "sentinel down-after-milliseconds mymaster 500\n"
                "sentinel failover-timeout mymaster 3000\n"
            )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", self.conf, "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def free_low_port() -> int:
    """A free port whose +10000 twin (a cluster node's bus port) is free and valid too."""
    rng = random.Random()
    while True:
        port = rng.randint(20_000, 30_000)
        try:
            with socket.socket() as low, socket.socket() as bus:
                low.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port


@dataclass
class SentinelDeployment:
    master: RedisServer
    replica: RedisServer
    sentinels: list[SentinelProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/mymaster"

    def master_port(self) -> int:
        with self.sentinels[0].client() as client:
            return int(client.sentinel_get_master_addr_by_name("mymaster")[1])

    def settled(self) -> bool:
        """Every sentinel knows the replica and the two other sentinels (needed to fail over)."""
        try:
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    if not client.sentinel_slaves("mymaster"):
                        return False
                    if len(client.sentinel_sentinels("mymaster")) < 2:
                        return False
        except redis.RedisError:
            return False
        return True


@pytest.fixture
def sentinel_deployment() -> Iterator[SentinelDeployment]:
    master = RedisServer()
    replica = RedisServer(None, "--replicaof", "127.0.0.1", str(master.port))
    deployment = SentinelDeployment(master, replica)
    try:
        master.start()
        replica.start()
        for _ in range(3):
            deployment.sentinels.append(SentinelProcess(master.port).start())
        wait_for(deployment.settled, timeout=20, message="sentinels did not discover each other")
        yield deployment
    finally:
        for sentinel in deployment.sentinels:
            sentinel.stop()
        replica.stop()
        master.stop()


def test_sentinel_failover_under_traffic(sentinel_deployment: SentinelDeployment) -> None:
    deployment = sentinel_deployment
    new_master = deployment.replica

    async def main() -> None:
        config = routing(deployment.url, breaker_cooldown_ms=200)
        async with opened(config) as store:
            sessions = [pin_key("t", f"before-{n}") for n in range(20)]
            for key in sessions:
                assert (await store.pin(key, A)).created
            # Replication is asynchronous: only pins the replica has survive the failover.
            wait_for(lambda: int(new_master.command("DBSIZE")) == len(sessions) + 2)  # idx, epoch

            served: list[tuple[str, bool, float, int]] = []  # key, degraded, seconds, phase
            failed_over = asyncio.Event()
            stop = asyncio.Event()

            async def client(number: int) -> None:
                rng = random.Random(number)
                turn = 0
                while not stop.is_set():
                    turn += 1
                    key = pin_key("t", f"traffic-{number}-{turn}")
                    phase = 1 if failed_over.is_set() else 0
                    started = time.perf_counter()
                    pinned = await store.pin(key, Pin(f"model-{number}"))
                    lookup = await store.get(rng.choice(sessions))
                    assert lookup.pin == A or (lookup.degraded and lookup.pin in (A, None))
                    seconds = time.perf_counter() - started
                    served.append((key, pinned.degraded or lookup.degraded, seconds, phase))
                    await asyncio.sleep(0.005)

            clients = [asyncio.ensure_future(client(n)) for n in range(4)]
            try:
                await eventually(lambda: asyncio.sleep(0, len(served) > 20))
                deployment.master.kill()

                async def promoted() -> bool:
                    return await asyncio.to_thread(deployment.master_port) == new_master.port

                await eventually(promoted, timeout=20)
                failed_over.set()

                async def serving_again() -> bool:
                    return sum(1 for row in served if row[3] == 1 and not row[1]) >= 20

                await eventually(serving_again, timeout=10)
            finally:
                stop.set()
                await asyncio.gather(*clients)

            assert any(row[1] for row in served)  # the switch was noticed...
            assert sum(row[2] > 1.0 for row in served) <= 2  # ...without a timeout per request
            after = [row[0] for row in served if row[3] == 1 and not row[1]]
            redis_keys = [store.keys(key)[0] for key in after]
            assert int(new_master.command("EXISTS", *redis_keys)) == len(after)
            # Sessions pinned before the failover keep their model from the new master.
            for key in sessions:
                lookup = await store.get(key)
                assert (lookup.pin, lookup.degraded) == (A, False)
            # Pins made while no master was reachable are published to the new one.
            await eventually(lambda: asyncio.sleep(0, store.pending == 0), timeout=5)
            during = [store.keys(row[0])[0] for row in served if row[1]]
            assert int(new_master.command("EXISTS", *during)) == len(set(during))

    run(main())


def test_sentinel_config_block(sentinel_deployment: SentinelDeployment) -> None:
    hosts = [f"127.0.0.1:{sentinel.port}" for sentinel in sentinel_deployment.sentinels]
    config = parse_config({
        **three_models("http://127.0.0.1:9"),
        "routing": {"session_cache": {
            "type": "redis", "sentinel": {"master_name": "mymaster", "sentinels": hosts}}},
    }, environ={})

    async def main() -> None:
        async with opened(config.routing) as store:
            key = pin_key("t", "s")
            assert (await store.pin(key, B)).created
            assert (await store.get(key)).pin == B
        assert sentinel_deployment.master.command("GET", store.keys(key)[0]) is not None

    run(main())


# --- Cluster ------------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[list[RedisServer]]:
    nodes = [
        RedisServer(free_low_port(), "--cluster-enabled", "yes", "--cluster-config-file",
                    "nodes.conf", "--cluster-node-timeout", "2000")
        for _ in range(3)
    ]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        wait_for(lambda: all("cluster_state:ok" in node.command("CLUSTER", "INFO")
                             for node in nodes), message="the cluster did not form")
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def node_keys(node: RedisServer, pattern: str) -> list[str]:
    return list(node.command("KEYS", pattern))


def test_cluster_store(cluster: list[RedisServer]) -> None:
    url = cluster[0].url
    cap = 64

    async def main() -> None:
        async with opened(routing(url, cap=cap, cluster=True)) as store, \
                opened(routing(url, cap=cap, cluster=True, refresh=True)) as sliding:
            keys = [pin_key("t", f"s{n}") for n in range(400)]
            evicted = 0
            for key in keys:
                result = await store.pin(key, A)
                assert result.created and not result.degraded
                evicted += result.evicted
            # 16 buckets of cap/16 pins each: the newest pins of each bucket survive.
            assert await store.count() == cap
            assert evicted == len(keys) - cap
            assert (await store.get(keys[-1])).pin == A
            assert (await store.pin(keys[-1], B)).pin == A  # first writer wins
            assert (await sliding.get(keys[-1])).pin == A  # the TOUCH script
            assert (await store.repin(keys[-1], A, C)).created
            assert (await sliding.get(keys[-1])).pin == C
            assert await store.delete(keys[-1]) == Removal(found=True)
            assert (await store.get(keys[-1])).pin is None
            assert await store.count() == cap - 1

    run(main())
    indexes = [key for node in cluster for key in node_keys(node, "agw:*:idx")]
    assert sorted(indexes) == sorted(f"agw:{{b{n}}}:idx" for n in range(16))
    pins = [node_keys(node, "agw:*:p:*") for node in cluster]
    assert all(pins), "every master holds pins"
    assert sum(map(len, pins)) == cap - 1
    for node in cluster:  # each pin lives on its bucket's slot, next to its index
        for key in node_keys(node, "agw:*"):
            tag = key.split("}")[0] + "}:idx"
            assert tag in node_keys(node, tag)


def test_cluster_behind_two_gateway_replicas(
    cluster: list[RedisServer], simulator: ThreadServer
) -> None:
    config = three_models(simulator.url, cluster[1].url)
    config["routing"]["session_cache"].update(cluster=True, socket_timeout_ms=1000)
    with gateway(config) as one, gateway(config) as two, httpx.Client(timeout=10) as client:
        for session in range(10):
            models = set()
            for turn in range(4):
                replica = (one, two)[(session + turn) % 2]
                response = client.post(
                    f"{replica.url}/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [
                        {"role": "user", "content": CODE if turn % 2 else REASON}]},
                    headers={"X-Model-Affinity": f"cluster-{session}"},
                )
                assert response.status_code == 200
                expected = "new" if turn == 0 else "hit"
                assert response.headers["x-model-affinity-status"] == expected
                models.add(response.headers["x-gateway-model"])
            assert len(models) == 1
    assert sum(int(node.command("DBSIZE")) for node in cluster) > 10

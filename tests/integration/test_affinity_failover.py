"""Redis changing under the gateway: a primary moved behind one name (a TCP front switched to a
promoted replica, the old primary demoted with REPLICAOF), an ACL that refuses a command, and
one slow reply. Both clients (`session_cache.client`) follow the same rules."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.affinity import StoreRejected, pin_key
from gateway.affinity.resp import RespClient
from tests.configs import three_models
from tests.integration.test_affinity_outage import Traffic, timed
from tests.support import RedisServer, ThreadServer, gateway, run, wait_for
from tests.unit.test_affinity_redis import A, B, opened, routing


class Front:
    """A TCP forwarder in its own thread, as the one name a managed Redis is reached by: new
    connections go to the current backend; connections already open stay where they are."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Front:
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def switch(self, backend: int) -> None:
        self.backend = backend

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.backend)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            for end in (writer, upstream_writer):
                end.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer().start()
    replica = RedisServer(None, "--replicaof", "127.0.0.1", str(primary.port)).start()
    try:
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


def in_sync(primary: RedisServer, replica: RedisServer) -> bool:
    ours = primary.command("INFO", "replication")
    theirs = replica.command("INFO", "replication")
    return bool(theirs.get("master_link_status") == "up"
                and ours["master_repl_offset"] == theirs["master_repl_offset"])


@pytest.mark.parametrize("client", ["pipelined", "redis-py"])
def test_a_primary_moved_behind_one_name_under_traffic(
    client: str, simulator: ThreadServer, primary_and_replica: tuple[RedisServer, RedisServer]
) -> None:
    old, new = primary_and_replica
    front = Front(old.port).start()
    config = three_models(simulator.url, front.url)
    config["routing"]["session_cache"]["client"] = client
    try:
        with gateway(config) as one, gateway(config) as two, ThreadPoolExecutor(4) as pool:
            traffic = Traffic([one, two])
            traffic.add(*(f"before-{n}" for n in range(20)))
            workers = [pool.submit(traffic.worker) for _ in range(4)]
            try:
                wait_for(lambda: len(traffic.replies) > 100, message="no traffic")
                # The move, as a managed Redis makes it: hold writes, let the replica catch up,
                # promote it, point the name at it, demote the old primary.
                old.command("CLIENT", "PAUSE", "3000", "WRITE")
                wait_for(lambda: in_sync(old, new), message="the replica did not catch up")
                new.command("REPLICAOF", "NO", "ONE")
                front.switch(new.port)
                moved = time.perf_counter()
                old.command("REPLICAOF", "127.0.0.1", str(new.port))
                old.command("CLIENT", "UNPAUSE")
                traffic.add(*(f"after-{n}" for n in range(20)))  # new sessions: writes
                wait_for(lambda: timed(moved) > 3.0 and {
                    r.session for r in traffic.since(moved + 2.0)} >= set(traffic.sessions),
                    timeout=20, message="not every session had a turn after the move")
            finally:
                traffic.stop.set()
                for worker in workers:
                    worker.result(timeout=30)
    finally:
        front.stop()

    replies = list(traffic.replies)
    assert all(reply.status == 200 for reply in replies)
    late = [r for r in replies if r.affinity == "degraded" and r.started > moved + 2.0]
    assert not late, f"{len(late)} degraded answers later than 2 s after the move"
    for session in traffic.sessions:  # pins kept: one model per session, before and after
        models = {reply.model for reply in replies if reply.session == session}
        assert len(models) == 1, f"{session} served by {models}"
    assert {r.replica for r in replies if r.started > moved + 2.0 and r.affinity == "hit"} == {0, 1}
    # New sessions were pinned on the new primary, which both replicas now share.
    assert int(new.command("DBSIZE")) >= len(traffic.sessions)
    assert old.command("INFO", "replication")["role"] == "slave"


def test_a_command_the_acl_refuses_is_an_error_not_an_outage(
    redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.command("ACL", "SETUSER", "gw", "on", ">pw", "~*", "+@all")
    url = f"redis://gw:pw@127.0.0.1:{redis_server.port}/0"

    async def main() -> None:
        async with opened(routing(url)) as store:
            held = pin_key("t", "held")
            assert (await store.pin(held, A)).created
            redis_server.command("ACL", "SETUSER", "gw", "-evalsha", "-eval")
            with caplog.at_level(logging.ERROR, logger="gateway.affinity"):
                for number in range(5):
                    pinned = await store.pin(pin_key("t", f"refused-{number}"), B)
                    assert pinned.degraded  # served from this replica, not shared
            assert not store.breaker.open and store.state == "up"
            lookup = await store.get(held)  # GET is still allowed: a hit, not degraded
            assert (lookup.pin, lookup.degraded) == (A, False)
            refusals = [r for r in caplog.records if "refused a command" in r.getMessage()]
            assert len(refusals) == 1 and "NOPERM" in refusals[0].getMessage()

    try:
        run(main())
        # At start the same refusal is a config error, naming the permission.
        redis_server.command("ACL", "SETUSER", "gw", "+@all", "-zadd")

        async def start() -> None:
            with pytest.raises(StoreRejected, match="lacks a permission the affinity store needs"):
                async with opened(routing(url)):
                    pass

        run(start())
    finally:
        redis_server.command("ACL", "DELUSER", "gw")


@pytest.mark.parametrize("client", ["pipelined", "redis-py"])
def test_one_slow_reply_does_not_open_the_breaker(
    client: str, redis_server: RedisServer, redis_url: str
) -> None:
    async def main() -> None:
        async with opened(routing(redis_url, socket_timeout_ms=100, client=client)) as store:
            key = pin_key("t", "s")
            await store.pin(key, A)
            link = store.commands._link if isinstance(store.commands, RespClient) else None
            redis_server.command("CLIENT", "PAUSE", "600", "ALL")  # Redis stalls for 0.6 s
            slow = await store.get(key)
            assert (slow.pin, slow.degraded) == (A, True)  # this one call timed out...
            assert not store.breaker.open and store.state == "up"  # ...and only it

            async def answered() -> bool:
                lookup = await store.get(key)
                return lookup.pin == A and not lookup.degraded

            deadline = time.monotonic() + 5
            while not await answered():
                assert time.monotonic() < deadline, "Redis did not answer again"
                assert not store.breaker.open
                await asyncio.sleep(0.05)
            if link is not None:  # the late reply was read and dropped; the connection stayed
                assert store.commands._link is link  # type: ignore[attr-defined]

    run(main())

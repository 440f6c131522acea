"""The pipelined RESP client: replies in order under concurrency, AUTH/SELECT, unix sockets and
TLS from the URL, per-command timeouts, one retry on a fresh connection, the in-flight bound,
cancellation, clean close; and which client a URL gets."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import ResponseError

from gateway.affinity import Pin, StoreRejected, pin_key
from gateway.affinity.connection import PooledCommands, connect, failure_kind, resp_address
from gateway.affinity.redis import RedisStore
from gateway.affinity.resp import Address, RespClient
from gateway.affinity.scripts import sources
from gateway.config.schema import SessionCacheConfig
from tests.support import RedisServer, Runner, free_port, run
from tests.unit.test_affinity_redis import A, opened, routing


def client(address: Address, timeout: float = 1.0, limit: int = 64) -> RespClient:
    return RespClient(address, timeout, 1.0, limit, sources())


def local(port: int, **options: Any) -> Address:
    return Address("127.0.0.1", port, **options)


def our_connections(server: RedisServer) -> int:
    """Clients connected to the server, besides the one asking."""
    return len(str(server.command("CLIENT", "LIST")).strip().splitlines()) - 1


# --- against a real redis-server --------------------------------------------------------------


def test_concurrent_commands_share_one_connection_and_get_their_own_replies(
    redis_url: str, redis_server: RedisServer, runner: Runner
) -> None:
    for n in range(300):
        redis_server.command("SET", f"k{n}", f"v{n}")

    async def main() -> None:
        # The server is shared by the session's tests: count the connections this one adds.
        before = our_connections(redis_server)
        resp = client(local(redis_server.port))
        try:
            keys = [f"k{n % 300}" if n % 7 else f"missing-{n}" for n in range(3000)]
            replies = await asyncio.gather(*(resp.get(key) for key in keys))
            assert replies == [None if key.startswith("missing") else
                               f"v{key[1:]}".encode() for key in keys]
            assert our_connections(redis_server) == before + 1
            assert await resp.ping()
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                redis_server.command("LPUSH", "list", "x")
                await resp.get("list")
            assert await resp.get("k1") == b"v1"  # an error reply leaves the stream in step
        finally:
            await resp.aclose()
        assert our_connections(redis_server) == before

    runner(main())


def test_auth_and_db_from_the_url() -> None:
    server = RedisServer().start()
    try:
        server.command("CONFIG", "SET", "requirepass", "s3cr:t@")
        inspector = redis.Redis(port=server.port, password="s3cr:t@", db=3)
        config = routing(f"redis://:s3cr%3At%40@127.0.0.1:{server.port}/3")

        async def main() -> None:
            async with opened(config) as store:
                assert (await store.pin(pin_key("t", "s"), A)).created
                assert (await store.get(pin_key("t", "s"))).pin == A
            # A refused password is a config error at start, naming Redis, never the password.
            with pytest.raises(StoreRejected, match="WRONGPASS") as refused:
                async with opened(routing(f"redis://:wrong@127.0.0.1:{server.port}/3")):
                    pass
            assert f"127.0.0.1:{server.port}" in str(refused.value)
            assert "wrong" not in str(refused.value).replace("WRONGPASS", "")

        run(main())
        assert inspector.dbsize() == 3  # the pin, its index and the bucket's epoch, in db 3
        inspector.close()
    finally:
        server.stop()


def test_acl_user_from_the_url(redis_server: RedisServer) -> None:
    redis_server.command("ACL", "SETUSER", "gw", "on", ">pw", "~*", "+@all")
    try:
        async def main() -> None:
            resp = client(local(redis_server.port, username="gw", password="pw"))
            try:
                assert await resp.ping()
                assert await resp.execute(b"ACL", b"WHOAMI") == b"gw"
            finally:
                await resp.aclose()

        run(main())
    finally:
        redis_server.command("ACL", "DELUSER", "gw")


def test_unix_socket_url(tmp_path: Path, runner: Runner) -> None:
    sock = tmp_path / "redis.sock"
    server = RedisServer(None, "--unixsocket", str(sock), "--unixsocketperm", "700").start()
    try:
        async def main() -> None:
            async with opened(routing(f"unix://{sock}?db=2")) as store:
                assert isinstance(store.commands, RespClient)
                assert (await store.pin(pin_key("t", "s"), A)).created
                assert (await store.get(pin_key("t", "s"))).pin == A

        runner(main())
        assert int(server.command("INFO", "keyspace")["db2"]["keys"]) == 3  # pin, index, epoch
    finally:
        server.stop()


def test_tls_url_verifies_the_server(certificates: Path, runner: Runner) -> None:
    tls_port = free_port()
    server = RedisServer(
        None, "--tls-port", str(tls_port), "--tls-cert-file", str(certificates / "server.pem"),
        "--tls-key-file", str(certificates / "server.key"),
        "--tls-ca-cert-file", str(certificates / "ca.pem"), "--tls-auth-clients", "yes",
    ).start()
    base = f"rediss://127.0.0.1:{tls_port}/0"
    trusting = f"{base}?ssl_ca_certs={certificates / 'ca.pem'}"
    mutual = (f"{trusting}&ssl_certfile={certificates / 'client.pem'}"
              f"&ssl_keyfile={certificates / 'client.key'}")
    try:
        async def main() -> None:
            async with opened(routing(mutual)) as store:
                assert isinstance(store.commands, RespClient)
                assert (await store.pin(pin_key("t", "s"), A)).created
                assert (await store.get(pin_key("t", "s"))).pin == A
            # Verified by default: a server certificate from an unknown CA is refused.
            async with opened(routing(f"{base}?ssl_certfile={certificates / 'client.pem'}"
                                      f"&ssl_keyfile={certificates / 'client.key'}")) as store:
                assert not await store.ping()
            async with opened(routing(trusting)) as store:  # the server wants a client cert
                assert not await store.ping()

        runner(main())
        assert int(server.command("DBSIZE")) == 3  # pin, index, epoch
    finally:
        server.stop()


def test_a_hung_server_costs_one_timeout_then_the_client_answers_again(runner: Runner) -> None:
    server = RedisServer().start()
    process = server.process
    assert process is not None

    async def main() -> None:
        resp = client(local(server.port), timeout=0.2)
        try:
            assert await resp.ping()
            process.send_signal(signal.SIGSTOP)
            try:
                started = time.perf_counter()
                results = await asyncio.gather(*(resp.get(f"k{n}") for n in range(50)),
                                               return_exceptions=True)
                elapsed = time.perf_counter() - started
                # Every command in flight fails at its own deadline (one timeout), none retried.
                assert all(isinstance(result, TimeoutError) for result in results)
                assert 0.19 <= elapsed < 0.6
            finally:
                process.send_signal(signal.SIGCONT)
            assert await resp.ping()  # the late replies were read and dropped
            assert await resp.get("k0") is None
        finally:
            await resp.aclose()
        await eventually_no_clients(server)

    try:
        runner(main())
    finally:
        server.stop()


async def eventually_no_clients(server: RedisServer) -> None:
    deadline = time.monotonic() + 5
    while our_connections(server):
        assert time.monotonic() < deadline, "connections left open"
        await asyncio.sleep(0.01)


def test_a_killed_connection_is_replaced(redis_server: RedisServer) -> None:
    async def main() -> None:
        resp = client(local(redis_server.port))
        try:
            assert await resp.ping()
            redis_server.command("CLIENT", "KILL", "TYPE", "normal")
            assert await resp.ping()
            assert our_connections(redis_server) == 1
        finally:
            await resp.aclose()

    run(main())


def test_a_redis_at_maxclients_is_an_outage_not_an_answer() -> None:
    """Redis refuses a connection past maxclients with an unasked error reply: given to the
    command that waited first, it read as "Redis is up" and the store's breaker flapped
    open and closed every cooldown."""
    full = RedisServer(None, "--maxclients", "1").start()
    holder = redis.Redis(port=full.port)
    try:
        holder.ping()  # the only slot

        async def main() -> None:
            resp = client(local(full.port))
            try:
                with pytest.raises(ConnectionError, match="refused the connection") as refused:
                    await resp.get("k")
                assert failure_kind(refused.value) == "down"
            finally:
                await resp.aclose()

        run(main())
    finally:
        holder.close()
        full.stop()


def test_a_connect_that_times_out_is_an_outage() -> None:
    """A listener whose accept queue is full drops new connections' SYNs: connects hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued = []
        for _ in range(8):  # fill the accept queue; the later ones hang in connect
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(listener.getsockname())
            queued.append(sock)

        async def main() -> None:
            resp = RespClient(Address("127.0.0.1", listener.getsockname()[1]), 1.0, 0.05, 64, sources())
            try:
                with pytest.raises(ConnectionError, match="timed out") as late:
                    await resp.get("k")
                assert failure_kind(late.value) == "down"  # it was "late", as a slow reply
            finally:
                await resp.aclose()

        try:
            run(main())
        finally:
            for sock in queued:
                sock.close()


def test_a_script_missing_from_redis_is_sent_whole(redis_url: str,
                                                   redis_server: RedisServer) -> None:
    async def main() -> None:
        async with opened(routing(redis_url)) as store:
            await store.pin(pin_key("t", "a"), A)
            redis_server.command("SCRIPT", "FLUSH")  # a restarted or failed-over Redis
            pinned = await store.pin(pin_key("t", "b"), A)
            assert (pinned.created, pinned.pin) == (True, A)
            assert await store.count() == 2

    run(main())


# --- against a scripted fake server -----------------------------------------------------------


class Fake:
    """A TCP server in the test's loop that reads RESP commands and does what `behave` says."""

    def __init__(self, behave: Callable[[Fake, asyncio.StreamReader, asyncio.StreamWriter],
                                        Awaitable[None]]) -> None:
        self.behave = behave
        self.connections = 0
        self.commands: list[list[bytes]] = []
        self.release = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Fake:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            await self.behave(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def command(self, reader: asyncio.StreamReader) -> list[bytes]:
        count = int((await reader.readline())[1:])
        args = []
        for _ in range(count):
            size = int((await reader.readline())[1:])
            args.append((await reader.readexactly(size + 2))[:-2])
        self.commands.append(args)
        return args


async def echo(fake: Fake, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads commands as they come; answers each GET with its key, in order, once released."""
    backlog: list[bytes] = []

    def answer(key: bytes) -> None:
        writer.write(b"$%d\r\n%s\r\n" % (len(key), key))

    async def flush() -> None:
        await fake.release.wait()
        for key in backlog:
            answer(key)

    flusher = asyncio.ensure_future(flush())
    try:
        while True:
            key = (await fake.command(reader))[1]
            if flusher.done():
                answer(key)
            else:
                backlog.append(key)
    finally:
        flusher.cancel()


async def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


def test_commands_in_flight_are_bounded(runner: Runner) -> None:
    async def main() -> None:
        async with Fake(echo) as fake:
            resp = client(local(fake.port), timeout=5, limit=4)
            try:
                calls = [asyncio.ensure_future(resp.get(f"k{n}")) for n in range(20)]
                await wait_until(lambda: len(fake.commands) == 4)
                await asyncio.sleep(0.05)  # room for a wrongly sent fifth to arrive
                assert len(fake.commands) == 4
                fake.release.set()
                assert await asyncio.gather(*calls) == [f"k{n}".encode() for n in range(20)]
                assert fake.connections == 1
            finally:
                await resp.aclose()

    runner(main())


def test_a_cancelled_caller_does_not_shift_the_replies(runner: Runner) -> None:
    async def main() -> None:
        async with Fake(echo) as fake:
            resp = client(local(fake.port), timeout=5, limit=2)
            try:
                first = asyncio.ensure_future(resp.get("first"))
                queued = [asyncio.ensure_future(resp.get(f"q{n}")) for n in range(3)]
                await wait_until(lambda: len(fake.commands) == 2)
                first.cancel()
                queued[1].cancel()  # waiting for room: it must not take any
                fake.release.set()
                assert await queued[0] == b"q0"
                assert await queued[2] == b"q2"
                assert await resp.get("after") == b"after"
                assert [args[1] for args in fake.commands] == [b"first", b"q0", b"q2", b"after"]
            finally:
                await resp.aclose()

    runner(main())


def test_one_retry_on_a_fresh_connection(runner: Runner) -> None:
    async def drop_first(fake: Fake, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        await fake.command(reader)
        if fake.connections == 1:
            return  # hang up without answering
        writer.write(b"+PONG\r\n")
        await fake.command(reader)

    async def always_drop(fake: Fake, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        await fake.command(reader)

    async def main() -> None:
        async with Fake(drop_first) as fake:
            resp = client(local(fake.port))
            try:
                assert await resp.ping()
                assert fake.connections == 2
            finally:
                await resp.aclose()
        async with Fake(always_drop) as fake:
            resp = client(local(fake.port))
            try:
                with pytest.raises(ConnectionError):
                    await resp.ping()
                assert fake.connections == 2  # one retry, not a loop
            finally:
                await resp.aclose()

    runner(main())


def test_close_fails_what_is_in_flight_and_leaves_nothing_running(runner: Runner) -> None:
    async def main() -> None:
        async with Fake(echo) as fake:
            resp = client(local(fake.port), timeout=5)
            calls = [asyncio.ensure_future(resp.get(f"k{n}")) for n in range(5)]
            await wait_until(lambda: len(fake.commands) == 5)
            await resp.aclose()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(result, ConnectionError) for result in results)
            with pytest.raises(ConnectionError):
                await resp.get("later")
            assert asyncio.all_tasks() == {asyncio.current_task()}
            assert resp._link is None
            assert fake.connections == 1

    runner(main())


# --- which client a URL gets ------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:7000/2", Address("127.0.0.1", 7000, db=2)),
    ("redis://:p%40ss@cache", Address("cache", 6379, password="p@ss")),
    ("redis://user:pw@cache:1/0", Address("cache", 1, username="user", password="pw")),
    ("unix:///run/redis.sock?db=4", Address(path="/run/redis.sock", db=4)),
])
def test_resp_addresses(url: str, expected: Address) -> None:
    got = resp_address(url)
    assert (got.host, got.port, got.path, got.username, got.password, got.db) == (
            expected.host, expected.port, expected.path, expected.username,
            expected.password, expected.db)
    assert got.ssl is None


def test_an_option_the_pipelined_client_does_not_honour_is_an_error_not_a_switch() -> None:
    with pytest.raises(ValueError, match=r"'socket_keepalive'.*client: redis-py"):
        resp_address("redis://cache?socket_keepalive=true")
    with pytest.raises(ValueError, match="Sentinel and Cluster need redis-py"):
        connect(SessionCacheConfig("redis", "redis://cache", client="pipelined", cluster=True))


def test_single_servers_get_the_pipelined_client_and_the_rest_redis_py() -> None:
    async def main() -> None:
        def cache(**options: Any) -> SessionCacheConfig:
            return SessionCacheConfig(type="redis", **options)

        plain = connect(cache(url="redis://127.0.0.1:1/0"))
        assert isinstance(plain, RespClient)
        await plain.aclose()
        tls = resp_address("rediss://cache:6380/0")
        assert tls is not None and tls.ssl is not None and tls.ssl.check_hostname
        assert tls.ssl.verify_mode == ssl.CERT_REQUIRED
        lax = resp_address("rediss://cache:6380/0?ssl_cert_reqs=none")
        assert lax is not None and lax.ssl is not None and lax.ssl.verify_mode == ssl.CERT_NONE
        with pytest.raises(ValueError, match="ssl_cert_reqs"):
            resp_address("rediss://cache:6380/0?ssl_cert_reqs=sometimes")
        for other in (cache(url="redis://127.0.0.1:1/0", cluster=True),
                      cache(url="redis+sentinel://127.0.0.1:1/mymaster"),
                      cache(url="redis://127.0.0.1:1/0?health_check_interval=5", client="redis-py"),
                      cache(url="redis://127.0.0.1:1/0", client="redis-py")):
            commands = connect(other)
            assert isinstance(commands, PooledCommands)
            await commands.aclose()

    run(main())


def test_a_store_on_the_pipelined_client_bounds_nothing_itself(redis_url: str) -> None:
    async def main() -> None:
        store = RedisStore(routing(redis_url))
        await store.open()
        try:
            assert not store.commands.pooled
            pins = await asyncio.gather(*(store.pin(pin_key("t", f"s{n}"), Pin(f"m{n}"))
                                          for n in range(500)))
            assert all(pinned.created and not pinned.degraded for pinned in pins)
        finally:
            await store.close()

    run(main())



def test_replies_split_anywhere_are_reassembled(runner: Runner) -> None:
    replies = [b"$5\r\nhello\r\n", b"$-1\r\n", b"*3\r\n:1\r\n$2\r\nm1\r\n:0\r\n", b"+PONG\r\n",
               b"-NOSCRIPT No matching script\r\n", b"$0\r\n\r\n"]

    async def trickle(fake: Fake, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        for _ in replies:
            await fake.command(reader)
        for byte in b"".join(replies):  # one byte per write, each pushed out before the next
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.001)
        await fake.command(reader)

    async def main() -> None:
        async with Fake(trickle) as fake:
            resp = client(local(fake.port))
            try:
                calls = [asyncio.ensure_future(resp.execute(b"GET", f"k{n}"))
                         for n in range(len(replies))]
                results = await asyncio.gather(*calls, return_exceptions=True)
                assert results[:4] == [b"hello", None, [1, b"m1", 0], b"PONG"]
                assert isinstance(results[4], ResponseError)
                assert str(results[4]).startswith("NOSCRIPT")
                assert results[5] == b""
            finally:
                await resp.aclose()

    runner(main())


def test_a_late_reply_fails_only_its_own_command(runner: Runner) -> None:
    """The first GET is answered after its deadline; the ones sent after it are answered in
    time, on the same connection, and get their own replies."""

    async def slow_first(fake: Fake, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        while True:
            key = (await fake.command(reader))[1]
            if key == b"slow":
                await fake.release.wait()
            writer.write(b"$%d\r\n%s\r\n" % (len(key), key))

    async def main() -> None:
        async with Fake(slow_first) as fake:
            resp = client(local(fake.port), timeout=0.2)
            try:
                slow = asyncio.ensure_future(resp.get("slow"))
                with pytest.raises(TimeoutError):
                    await slow
                fake.release.set()  # the late reply comes now, then the others
                assert await asyncio.gather(*(resp.get(f"k{n}") for n in range(5))) == [
                    f"k{n}".encode() for n in range(5)]
                assert fake.connections == 1
            finally:
                await resp.aclose()

    runner(main())


def test_a_connection_that_answers_nothing_is_dropped(runner: Runner) -> None:
    async def silent_first(fake: Fake, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        while True:
            key = (await fake.command(reader))[1]
            if fake.connections > 1:
                writer.write(b"$%d\r\n%s\r\n" % (len(key), key))

    async def main() -> None:
        async with Fake(silent_first) as fake:
            resp = client(local(fake.port), timeout=0.05)
            link = None
            try:
                started = time.perf_counter()
                with pytest.raises(TimeoutError):
                    await resp.get("lost")
                link = resp._link
                assert link is not None and link.error is None  # one late reply: kept
                await wait_until(lambda: link is not None and link.error is not None)
                assert time.perf_counter() - started >= 2.0  # HUNG_MIN_S of silence
                assert await resp.get("k") == b"k"  # on a fresh connection
                assert fake.connections == 2
            finally:
                await resp.aclose()

    runner(main())


@pytest.mark.parametrize("reply", [b"-READONLY You can't write against a read only replica.",
                                   b"-LOADING Redis is loading the dataset in memory",
                                   b"-MASTERDOWN Link with MASTER is down"])
def test_a_failover_reply_drops_the_connection_and_resends(reply: bytes, runner: Runner) -> None:
    """The first connection reaches a node that cannot serve: the command that got the reply and
    the one sent behind it both go again on a fresh connection, to the node that can."""

    async def demoted_first(fake: Fake, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        while True:
            key = (await fake.command(reader))[1]
            if fake.connections == 1:
                writer.write(reply + b"\r\n")
            else:
                writer.write(b"$%d\r\n%s\r\n" % (len(key), key))

    async def main() -> None:
        async with Fake(demoted_first) as fake:
            resp = client(local(fake.port))
            try:
                assert await asyncio.gather(resp.get("a"), resp.get("b")) == [b"a", b"b"]
                assert fake.connections == 2
                assert await resp.get("c") == b"c"
            finally:
                await resp.aclose()

    runner(main())


def test_other_error_replies_are_the_commands_answer(runner: Runner) -> None:
    async def refusing(fake: Fake, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        while True:
            key = (await fake.command(reader))[1]
            if key == b"no":
                writer.write(b"-NOPERM this user has no permissions to run the 'get' command\r\n")
            else:
                writer.write(b"$%d\r\n%s\r\n" % (len(key), key))

    async def main() -> None:
        async with Fake(refusing) as fake:
            resp = client(local(fake.port))
            try:
                with pytest.raises(ResponseError, match=r"^NOPERM"):
                    await resp.get("no")
                assert await resp.get("yes") == b"yes"
                assert fake.connections == 1
            finally:
                await resp.aclose()

    runner(main())

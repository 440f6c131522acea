"""Real parts for tests: uvicorn servers in threads, a private redis-server, deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn

from gateway.app import create_app
from gateway.config import Config, parse_config
from gateway.server import server_settings

# asyncio.run or uvloop.run: production runs on uvloop, whose transports and timers differ
Runner = Callable[[Coroutine[Any, Any, None]], None]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, message: str = "") -> Any:
    """Poll until `condition()` is truthy; fail at the deadline (never sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(message or "condition not met before the deadline")
        time.sleep(0.005)


async def answer_lifespan(receive: Any, send: Any) -> None:
    """The lifespan protocol for a test's raw ASGI app: start, then stop when told."""
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.complete"})


async def read_all(receive: Any) -> bytes:
    """A test app's whole request body, however many messages it came in."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port, for uvicorn to listen on. IPPROTO_TCP named,
    as uvicorn's own sockets do: asyncio disables Nagle on the connections it accepts only then,
    and without that a response written in two parts (head, then body) waits for the client's
    delayed ACK, about 40 ms a request."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadServer:
    """An ASGI app under a real uvicorn server on loopback, in a background thread. With a gateway
    `Config`, the server is set up as `serve` sets it up (gateway/server.py)."""

    def __init__(self, app: Any, config: Config | None = None) -> None:
        # Bound here and handed to uvicorn, so no other server can take the port in between.
        self.socket = loopback_socket()
        self.port = int(self.socket.getsockname()[1])
        self.app = app
        test_settings: dict[str, Any] = {
            "host": "127.0.0.1", "port": self.port, "loop": "asyncio", "log_level": "warning",
            "timeout_graceful_shutdown": 5,
        }
        if config is not None:
            settings = server_settings(config, **test_settings)
        else:
            settings = {"http": "httptools", "access_log": False, "lifespan": "on", **test_settings}
        self.server = uvicorn.Server(uvicorn.Config(app, **settings))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self.thread.start()
        wait_for(lambda: self.server.started, message=f"server on {self.port} did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


@contextmanager
def serve(app: Any, config: Config | None = None) -> Iterator[ThreadServer]:
    server = ThreadServer(app, config).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def gateway(config: Config | dict[str, Any]) -> Iterator[ThreadServer]:
    """A gateway replica built from a Config or a raw config mapping."""
    if isinstance(config, dict):
        config = parse_config(config, environ={})
    with serve(create_app(config), config) as server:
        yield server


class Served:
    """`python -m gateway serve` on a free port, as a subprocess; its output kept for failure messages."""

    def __init__(self, config: dict[str, Any], directory: Path, *options: str) -> None:
        path = directory / "config.yaml"
        path.write_bytes(orjson.dumps(config))  # JSON is YAML
        self.port = free_port()
        self.log = (directory / "serve.log").open("w+b")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AFFINITY_", "PROMETHEUS_"))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path),
             "--host", "127.0.0.1", "--port", str(self.port), *options],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # its own process group: `stop` takes its workers too
        )
        wait_for(self.ready, timeout=30, message=f"gateway did not start: {self.output()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        assert self.process.poll() is None, self.output()
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def refuses_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return False
        except OSError:
            return True

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        # The whole group: with --workers, killing the supervisor alone leaves its workers
        # running (orphans that outlived the test run, found on a CI machine).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()


class RedisServer:
    """A private redis-server on a free port (never the machine's shared one), killable."""

    def __init__(self, port: int | None = None, *extra: str, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed; install it with `apt-get install redis-server`"
            )
        self.binary = binary
        self.port = port or free_port()
        self.extra = extra
        self.password = password  # the server's requirepass, for the test's own commands
        self.dir = tempfile.mkdtemp(prefix="agw-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, message=f"redis-server on {self.port} did not start")
        return self

    def ping(self) -> bool:
        import redis

        try:
            return bool(self.command("PING"))
        except (OSError, redis.RedisError):
            return False

    def command(self, *args: str) -> Any:
        """A synchronous command through redis-py (tests inspect the server directly)."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=2, decode_responses=True,
                             password=self.password)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def fixture_path(name: str) -> Path:
    return Path(__file__).parent / "fixtures" / name

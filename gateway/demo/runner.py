"""Starting and stopping what the demo runs: the simulator, Redis and gateway replicas.

Every child is a subprocess in its own session, so a Ctrl-C in the terminal reaches only the
demo, which then stops its children in order: SIGTERM to each process group, SIGKILL after a
deadline. Their output goes to files in a private directory, shown when one fails to start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

_START_TIMEOUT = 30.0  # seconds for a child to answer; a cold start on a slow machine is ~2 s
_STOP_TIMEOUT = 10.0
_GRACE = 1.0  # seconds to finish open requests before being told to stop at once
_PORT_ATTEMPTS = 3  # another process may take a free port before the child binds it


class StartError(RuntimeError):
    """A child exited or never became ready; the message carries the tail of its output."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Argv = Callable[[int], list[str]]  # the command line for a given port


@dataclass
class Child:
    name: str
    argv: Argv
    log: Path
    port: int
    process: subprocess.Popen[bytes]
    ready: str | None  # the HTTP path that answers 200 once it is up; None: it accepts TCP

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Everything the demo started; `stop()` ends all of it, whatever happened before."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[Child] = []

    def spawn(self, name: str, argv: Argv, ready: str | None) -> Child:
        """Start a child on a free port; `wait_ready` then waits for it to answer."""
        log = self.workdir / f"{name.replace(' ', '-')}.log"
        port = free_port()
        child = Child(name, argv, log, port, _popen(argv(port), log), ready)
        self.children.append(child)
        return child

    def stop(self, timeout: float = _STOP_TIMEOUT) -> list[str]:
        """Stop every child, newest first; the names of any that had to be killed."""
        children = list(reversed(self.children))
        for child in children:
            _signal(child, signal.SIGTERM)
        _wait_all(children, time.monotonic() + _GRACE)
        # uvicorn waits for open requests after the first signal (an interrupted turn may
        # still be in the simulator's time to first token); a SIGINT after it means "now".
        for child in children:
            if child.process.poll() is None:
                _signal(child, signal.SIGINT)
        _wait_all(children, time.monotonic() + timeout)
        killed = [child.name for child in children if child.process.poll() is None]
        for child in children:
            _signal(child, signal.SIGKILL)  # the whole group: anything a child started goes too
            child.process.wait()
        self.children.clear()
        return killed

    def start_simulator(self, ttft_ms: float = 0.0) -> Child:
        return self.spawn(
            "simulator",
            lambda port: [*_cli(), "simulate", "--port", str(port), "--ttft-ms", str(ttft_ms)],
            "/v1/models",
        )

    def start_replica(self, number: int, config: Path) -> Child:
        return self.spawn(
            f"replica {number}",
            lambda port: [*_cli(), "serve", "--config", str(config), "--port", str(port),
                          "--host", "127.0.0.1"],
            "/readyz",
        )

    def start_redis(self) -> Child | None:
        """A private, throwaway redis-server; None if it is not installed."""
        binary = shutil.which("redis-server")
        if binary is None:
            return None
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        return self.spawn("redis", lambda port: [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
            "no", "--dir", str(data),
        ], None)

    def wait_ready(self, child: Child, timeout: float = _START_TIMEOUT) -> None:
        """Until the child is up (its `ready` path answers 200), restarting it on a new port
        if it exits first."""
        deadline = time.monotonic() + timeout
        attempts = 1
        with httpx.Client(timeout=2.0) as client:
            while True:
                if child.process.poll() is not None:
                    if attempts == _PORT_ATTEMPTS:
                        raise StartError(
                            f"{child.name} exited with {child.process.returncode}:\n{child.tail()}"
                        )
                    # Most likely its port was taken before it bound it: again, elsewhere.
                    attempts += 1
                    child.port = free_port()
                    child.process = _popen(child.argv(child.port), child.log)
                    continue
                if _answers(client, child):
                    return
                if time.monotonic() > deadline:
                    raise StartError(
                        f"{child.name} was not ready after {timeout:.0f} s:\n{child.tail()}"
                    )
                time.sleep(0.05)


def _popen(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _cli() -> list[str]:
    # The running interpreter's own gateway: works from a venv, an install or a checkout alike.
    return [sys.executable, "-m", "gateway"]


def _answers(client: httpx.Client, child: Child) -> bool:
    if child.ready is None:
        try:
            with socket.create_connection(("127.0.0.1", child.port), timeout=1.0):
                return True
        except OSError:
            return False
    try:
        return client.get(f"{child.url}{child.ready}").status_code == 200
    except httpx.HTTPError:
        return False


def _wait_all(children: list[Child], deadline: float) -> None:
    for child in children:
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


def _signal(child: Child, signum: int) -> None:
    try:
        os.killpg(child.process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # already gone (its group with it)


def delete_keys(redis_url: str, prefix: str) -> int:
    """Drop the demo's own pins from a shared Redis: only keys under its unique prefix."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def redis_answers(redis_url: str) -> bool:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()

"""Processes for load tests and benchmarks: a private redis-server, the simulator, gateway
replicas and helper servers, each started on a free loopback port, optionally pinned to CPUs
with `taskset`, waited on until ready, and all stopped again (also on Ctrl-C or SIGTERM)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "loadtest" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout:.0f} s")
        time.sleep(0.05)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def redis_command(port: int, *args: str) -> bytes:
    """One RESP command over a raw socket: no client library, so it adds no connections to count."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            data += sock.recv(65536)
            if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                return data
            if data.startswith(b"$"):
                head, _, rest = data.partition(b"\r\n")
                size = int(head[1:])
                if size < 0 or len(rest) >= size + 2:
                    return rest[:size]


def redis_ready(port: int) -> bool:
    try:
        return redis_command(port, "PING") == b"+PONG\r\n"
    except OSError:
        return False


def command_stats(port: int) -> dict[str, int]:
    """Calls per command from `INFO commandstats` (the bench's own INFO calls left out)."""
    counts: dict[str, int] = {}
    for line in redis_command(port, "INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_") and not line.startswith("cmdstat_info:"):
            name, _, fields = line[len("cmdstat_"):].partition(":")
            counts[name] = int(fields.split(",")[0].split("=")[1])
    return counts


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gateway_config(upstream: str, redis_url: str, model_ids: Sequence[str] = ()) -> dict[str, Any]:
    """Three models on one upstream and two routing preferences, pins in the given Redis."""
    small, large, coder = model_ids or ("gpt-4o-mini", "gpt-4o", "coder")
    return {
        "version": "v0.4.0",
        "model_providers": [
            {"model": f"openai/{small}", "base_url": upstream, "access_key": "sk-loadtest",
             "default": True},
            {"model": f"openai/{large}", "base_url": upstream, "access_key": "sk-loadtest"},
            {"model": f"vllm/{coder}", "base_url": f"{upstream}/v1"},
        ],
        "routing_preferences": [
            {"name": "code_generation",
             "description": "generating new code, writing functions, or creating boilerplate",
             "models": [f"vllm/{coder}", f"openai/{large}"]},
            {"name": "complex_reasoning", "description":
             "complex reasoning tasks, multi-step analysis, or detailed explanations",
             "models": [f"openai/{large}"]},
        ],
        "routing": {"session_cache": {"type": "redis", "url": redis_url}},
        "logging": {"level": "warning"},
    }


class Stack:
    """Owns every process it starts; `stop()` (or leaving the `with`) ends them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spawn(self, name: str, argv: Sequence[str], cpus: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if cpus is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", cpus, *argv]  # taskset execs: the pid stays the server's
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        )
        log.close()
        self.processes.append((name, process))
        return process

    def alive(self, process: subprocess.Popen[bytes], name: str) -> bool:
        """True, or the process's exit and log tail as an error."""
        if process.poll() is not None:
            log = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")
        return True

    def wait_http(self, process: subprocess.Popen[bytes], name: str, url: str,
                  timeout: float = 30) -> None:
        wait_until(lambda: self.alive(process, name) and http_ok(url), timeout, name)

    def wait_tcp(self, process: subprocess.Popen[bytes], name: str, port: int) -> None:
        wait_until(lambda: self.alive(process, name) and tcp_open(port), 30, name)

    def end(self, process: subprocess.Popen[bytes]) -> None:
        """Stop one process early (the rest still stop at the end)."""
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.processes = [(n, p) for n, p in self.processes if p is not process]

    def redis(self, cpus: str | None = None) -> tuple[int, subprocess.Popen[bytes]]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: 'apt-get install redis-server'")
        port = free_port()  # never the shared 6379
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        process = self.spawn("redis", [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(data),
        ], cpus)
        wait_until(lambda: self.alive(process, "redis") and redis_ready(port), 15, "redis")
        return port, process

    def simulator(self, cpus: str | None = None, *args: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        argv = [str(BIN / "affinity-gateway"), "simulate", "--port", str(port), *args]
        process = self.spawn("simulator", argv, cpus)
        url = f"http://127.0.0.1:{port}"
        self.wait_http(process, "simulator", f"{url}/healthz")
        return url, process

    def gateway(self, name: str, config: dict[str, Any], cpus: str | None = None,
                env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen[bytes]]:
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        process = self.spawn(name, [
            str(BIN / "affinity-gateway"), "serve", "--config", str(path), "--host", "127.0.0.1",
            "--port", str(port),
        ], cpus, env)
        url = f"http://127.0.0.1:{port}"
        self.wait_http(process, name, f"{url}/readyz")
        return url, process

    def stop(self) -> None:
        """SIGTERM everything we started (newest first), then SIGKILL what has not exited."""
        for _, process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        deadline = time.monotonic() + 10
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so `with Stack(...)` still stops the children."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)

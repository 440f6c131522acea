"""Redis clients alone: CPU per pinned-path `GET` of the gateway's pipelined client, redis-py
and coredis.

Each client reads one existing pin key from a private redis-server (on the load core),
16 at a time on one uvloop, for a few seconds, interleaved over rounds; each client runs in
its own process pinned to the server core, and its CPU time per command is kept from its
best round. This is what decides `session_cache.client` (README, "Which Redis client").

    .venv/bin/python loadtest/redis_clients.py      # needs coredis: pip install coredis
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
KEY = "agw:{b0}:p:0123456789abcdef0123456789abcdef"
VALUE = "openai/gpt-4o\tcomplex_reasoning"
CONCURRENCY = 16
SECONDS = 3.0
ROUNDS = 3


async def pipelined(port: int) -> tuple[int, float]:
    from gateway.affinity import scripts
    from gateway.affinity.resp import Address, RespClient

    client = RespClient(Address(port=port), 0.25, 0.5, limit=64, scripts=scripts.sources())
    try:
        return await drive(lambda: client.get(KEY))
    finally:
        await client.aclose()


async def redis_py(port: int) -> tuple[int, float]:
    from gateway.affinity.connection import connect
    from gateway.config.schema import SessionCacheConfig

    commands = connect(SessionCacheConfig("redis", f"redis://127.0.0.1:{port}/0", client="redis-py"))
    try:
        return await drive(lambda: commands.get(KEY))
    finally:
        await commands.aclose()


async def coredis_client(port: int) -> tuple[int, float]:
    import coredis

    async with coredis.Redis(port=port, stream_timeout=0.25, connect_timeout=0.5) as client:
        return await drive(lambda: client.get(KEY))


async def drive(call: Callable[[], Awaitable[object]]) -> tuple[int, float]:
    """Commands done and CPU seconds spent in SECONDS of CONCURRENCY loops (after a warm-up)."""
    stop = time.perf_counter() + 0.3
    count = 0

    async def loop() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            assert await call() is not None
            count += 1

    await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    count = 0
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = cpu.ru_utime + cpu.ru_stime
    stop = time.perf_counter() + SECONDS
    await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return count, cpu.ru_utime + cpu.ru_stime - started


CLIENTS = {"pipelined": pipelined, "redis-py": redis_py, "coredis": coredis_client}


def measure(name: str, port: int) -> None:
    import uvloop

    count, cpu = uvloop.run(CLIENTS[name](port))
    print(f"{count} {cpu}")


def main() -> int:
    if len(sys.argv) == 3:  # a child: one client, one round
        measure(sys.argv[1], int(sys.argv[2]))
        return 0
    server_cpu = os.environ.get("BENCH_SERVER_CPU", "0")
    load_cpu = os.environ.get("BENCH_LOAD_CPU", "1")
    sys.path.insert(0, str(HERE))
    from stack import Stack, redis_command

    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="agw-bench-redis-") as folder, Stack(Path(folder)) as stack:
        port, _ = stack.redis(load_cpu)  # waits for its PING, not for a guess of time
        redis_command(port, "SET", KEY, VALUE)
        for _ in range(ROUNDS):
            for name in CLIENTS:
                child = ["taskset", "-c", server_cpu, sys.executable, __file__, name, str(port)]
                done = subprocess.run(child, capture_output=True, text=True, timeout=60)
                if done.returncode != 0:
                    print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                    continue
                count, cpu = done.stdout.split()
                rate, per = int(count) / SECONDS, float(cpu) / int(count) * 1e6
                if name not in best or per < best[name][1]:
                    best[name] = (rate, per)
    print("| client | GET/s | CPU us/GET |\n|---|---:|---:|")
    for name, (rate, per) in best.items():
        print(f"| {name} | {rate:,.0f} | {per:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

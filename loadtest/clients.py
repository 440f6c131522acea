"""Upstream clients alone: CPU per request of the gateway's client, aiohttp's and pyreqwest's
(Rust reqwest under Python: proxies, pool limits and timeouts built in; the library to switch
to if it ever comes within a few us of the gateway's own).

Both post the same small chat body to the canned upstream (loadtest/upstream.py, on the load
core), 16 at a time on one uvloop, for a few seconds each, interleaved over rounds; each
client runs in its own process pinned to the server core, and its CPU time per request is
kept from its best round.

    .venv/bin/python loadtest/clients.py
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
BODY = b'{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
CONCURRENCY = 16
SECONDS = 3.0
ROUNDS = 3


async def gateway_client(url: str) -> tuple[int, float]:
    from gateway.config.schema import UpstreamConfig
    from gateway.upstream import UpstreamClient

    client = UpstreamClient(UpstreamConfig())
    await client.open()

    async def one() -> None:
        response = await client.post(url, HEADERS, BODY)
        await response.read()

    try:
        return await drive(one)
    finally:
        await client.close()


async def aiohttp_client(url: str) -> tuple[int, float]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as session:
        async def one() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()

        return await drive(one)


async def drive(call: Callable[[], Awaitable[None]]) -> tuple[int, float]:
    """Requests done and CPU seconds spent in SECONDS of CONCURRENCY loops (after a warm-up)."""
    stop = time.perf_counter() + 0.3
    count = 0

    async def loop() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await call()
            count += 1

    await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))  # warm-up: connections open
    count = 0
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = cpu.ru_utime + cpu.ru_stime
    stop = time.perf_counter() + SECONDS
    await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return count, cpu.ru_utime + cpu.ru_stime - started


async def pyreqwest_client(url: str) -> tuple[int, float]:
    from pyreqwest.client import ClientBuilder

    async with ClientBuilder().http1_only().build() as client:
        async def one() -> None:
            response = await client.post(url).headers(HEADERS).body_bytes(BODY).build().send()
            await response.bytes()

        return await drive(one)


CLIENTS = {"gateway": gateway_client, "aiohttp": aiohttp_client, "pyreqwest": pyreqwest_client}


def measure(name: str, url: str) -> None:
    import uvloop

    count, cpu = uvloop.run(CLIENTS[name](url))
    print(f"{count} {cpu}")


def main() -> int:
    if len(sys.argv) == 3:  # a child: one client, one round
        measure(sys.argv[1], sys.argv[2])
        return 0
    server_cpu = os.environ.get("BENCH_SERVER_CPU", "0")
    load_cpu = os.environ.get("BENCH_LOAD_CPU", "1")
    sys.path.insert(0, str(HERE))
    from stack import free_port

    port = free_port()
    upstream = subprocess.Popen(["taskset", "-c", load_cpu, sys.executable, str(HERE / "upstream.py"),
                                 "--port", str(port)])
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    best: dict[str, tuple[float, float]] = {}
    try:
        time.sleep(1.0)
        for _ in range(ROUNDS):
            for name in CLIENTS:
                done = subprocess.run(["taskset", "-c", server_cpu, sys.executable, __file__, name, url],
                                      capture_output=True, text=True, check=True, timeout=60)
                count, cpu = done.stdout.split()
                rate, per = int(count) / SECONDS, float(cpu) / int(count) * 1e6
                if name not in best or per < best[name][1]:
                    best[name] = (rate, per)
    finally:
        upstream.terminate()
        upstream.wait()
    print("| client | req/s | CPU us/req |\n|---|---:|---:|")
    for name, (rate, per) in best.items():
        print(f"| {name} | {rate:,.0f} | {per:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

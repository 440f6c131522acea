"""The gateway app's own CPU per request, without uvicorn or a client socket: the ASGI app is
called in-process, one request after another, against the canned upstream (loadtest/upstream.py),
chat completions and the Responses API (translated to chat) for the same model, alternating in
rounds and keeping each one's best. On a shared machine this moves far less than `make bench`,
so it can price a change of a few us.

    .venv/bin/python loadtest/bench_inprocess.py [rounds]
    CHECKOUT=/path/to/other/checkout .venv/bin/python loadtest/bench_inprocess.py

With BENCH_SERVER_CPU set, the app runs pinned to that core and the upstream to BENCH_LOAD_CPU
(default 1).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("CHECKOUT", str(HERE.parent)))  # the gateway measured
sys.path.insert(1, str(HERE))

import orjson  # noqa: E402
import uvloop  # noqa: E402
from stack import free_port, gateway_config, tcp_open, wait_until  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.config import parse_config  # noqa: E402

REQUESTS = 2000
CASES = {
    "chat": ("/v1/chat/completions", {"model": "vllm/bench-coder",
                                      "messages": [{"role": "user", "content": "hello"}]}),
    "responses": ("/v1/responses", {"model": "vllm/bench-coder", "input": "hello", "store": False}),
}


class App:
    """The gateway app, its lifespan run, called the way uvicorn calls it."""

    def __init__(self, upstream: str) -> None:
        config = gateway_config(upstream, "", ("bench-model", "bench-large", "bench-coder"))
        config["routing"]["session_cache"] = {"type": "memory"}
        self.app = create_app(parse_config(config, environ={}))
        self.state: dict[str, Any] = {}

    async def start(self) -> None:
        self.lifespan_in: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.lifespan_out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self.lifespan = asyncio.ensure_future(self.app(scope, self.lifespan_in.get, self.lifespan_out.put))
        await self.lifespan_in.put({"type": "lifespan.startup"})
        started = await self.lifespan_out.get()
        assert started["type"] == "lifespan.startup.complete", started

    async def stop(self) -> None:
        await self.lifespan_in.put({"type": "lifespan.shutdown"})
        await self.lifespan_out.get()

    async def post(self, path: str, body: bytes) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
            "headers": [(b"host", b"gateway"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "state": self.state,
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)  # a client that stays: the disconnect watch waits here
            return {"type": "http.disconnect"}

        statuses = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await self.app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"{path} answered {statuses}")


async def measure(app: App, rounds: int) -> dict[str, list[float]]:
    await app.start()
    bodies = {name: (path, orjson.dumps(body)) for name, (path, body) in CASES.items()}
    for path, body in bodies.values():  # warm up: caches, pools, the router
        for _ in range(300):
            await app.post(path, body)
    results: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, (path, body) in bodies.items():
            started = time.process_time()
            for _ in range(REQUESTS):
                await app.post(path, body)
            results[name].append((time.process_time() - started) / REQUESTS * 1e6)
    await app.stop()
    return results


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), "--port", str(port)])
    cpu, load_cpu = os.environ.get("BENCH_SERVER_CPU"), os.environ.get("BENCH_LOAD_CPU", "1")
    if cpu is not None:  # the app on one core, the upstream on the other
        os.sched_setaffinity(upstream.pid, {int(load_cpu)})
        os.sched_setaffinity(0, {int(cpu)})
    try:
        wait_until(lambda: tcp_open(port), 10, "the canned upstream")
        results = uvloop.run(measure(App(f"http://127.0.0.1:{port}"), rounds))
    finally:
        upstream.kill()
        upstream.wait()
    best = {name: min(values) for name, values in results.items()}
    for name, values in results.items():
        print(f"{name:10} best {best[name]:6.1f} us/request  rounds {[round(v, 1) for v in values]}")
    print(f"responses - chat: {best['responses'] - best['chat']:+.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())

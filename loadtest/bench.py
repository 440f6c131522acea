"""`make bench`: what the gateway adds, side by side with references, from one run.

Servers run on one core (BENCH_SERVER_CPU, default 0); the load generator, the fake upstream
and Redis on the other (BENCH_LOAD_CPU, default 1), pinned with `taskset`. Measured, each
against the same near-zero-cost upstream (loadtest/upstream.py, a canned-answer asyncio server
standing in for nginx `return 200`):

- direct to the upstream; an empty Starlette handler that parses the body and answers; a
  minimal Starlette proxy over aiohttp; the gateway with affinity off (no header) and on
  (every request carries one of 1,000 session ids, all pinned beforehand, Redis store);
  LiteLLM's proxy when BENCH_PEERS=litellm (see loadtest/litellm_peer.py);
- 16 connections closed loop for BENCH_DURATION s (default 6): requests/s, p50, p99;
- 1 connection: p50, and added latency = server p50 - direct p50;
- open loop at half the gateway's saturating rate: p99;
- streaming at 1 connection: added time to first token, SSE events out == events in;
  256 concurrent paced streams: all complete, longest silence inside a stream;
- Redis commands per pinned request (`INFO commandstats` deltas); gateway RSS idle and after.

Prints a markdown table and writes loadtest/results/bench.md (and bench.json).
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Measurements, render
from stack import (
    RESULTS,
    ROOT,
    Stack,
    command_stats,
    exit_on_sigterm,
    free_port,
    gateway_config,
    rss_mb,
)

HERE = Path(__file__).resolve().parent
PATH = "/v1/chat/completions"
SESSIONS = 1000
STREAM_CHUNKS = 16
PACED = {"connections": 256, "chunks": 20, "interval_ms": 50}


class Bench:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.server_cpu = os.environ.get("BENCH_SERVER_CPU", "0")
        self.load_cpu = os.environ.get("BENCH_LOAD_CPU", "1")
        self.duration = float(os.environ.get("BENCH_DURATION", "6"))
        self.short = max(2.0, self.duration / 2)
        self.m = Measurements(stream_events=STREAM_CHUNKS + 1, paced_shape=dict(PACED))

    def load(self, url: str, **options: Any) -> dict[str, Any]:
        """One load generator run, pinned to the load core; its JSON summary."""
        argv = [sys.executable, str(HERE / "loadgen.py"), "--url", url + PATH]
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value not in (False, None):
                argv += [flag, str(value)]
        command = ["taskset", "-c", self.load_cpu, *argv]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
        result: dict[str, Any] = orjson.loads(done.stdout)
        if result["errors"]:
            raise RuntimeError(f"load generator saw errors against {url}: {result}")
        return result

    def throughput(self, name: str, url: str, **options: Any) -> None:
        print(f"  {name}: 16 connections, {self.duration:.0f} s", flush=True)
        self.m.throughput[name] = self.load(
            url, connections=16, duration=self.duration, warmup=1, **options)
        print(f"  {name}: 1 connection, {self.short:.0f} s", flush=True)
        self.m.single[name] = self.load(url, connections=1, duration=self.short, warmup=0.5,
                                        **options)

    def upstream(self) -> str:
        port = free_port()
        process = self.stack.spawn(
            "upstream", [sys.executable, str(HERE / "upstream.py"), "--port", str(port)],
            self.load_cpu)
        self.stack.wait_tcp(process, "upstream", port)
        return f"http://127.0.0.1:{port}"

    def baseline(self, kind: str, upstream: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        process = self.stack.spawn(kind, [
            sys.executable, str(HERE / "baseline.py"), kind, "--port", str(port),
            "--upstream", upstream], self.server_cpu)
        self.stack.wait_tcp(process, kind, port)
        return f"http://127.0.0.1:{port}", process

    def run(self) -> Measurements:
        upstream = self.upstream()
        redis_port, _ = self.stack.redis(self.load_cpu)
        print("direct to the upstream", flush=True)
        self.throughput("direct", upstream)
        self.m.streams["direct"] = self.load(
            upstream, connections=1, duration=self.short, stream=True, chunks=STREAM_CHUNKS)
        for kind, label in (("empty", "empty Starlette"), ("proxy", "Starlette + aiohttp proxy")):
            print(label, flush=True)
            url, process = self.baseline(kind, upstream)
            self.throughput(label, url)
            self.stack.end(process)
        self.gateway(upstream, redis_port)
        if "litellm" in os.environ.get("BENCH_PEERS", "").split(","):
            from litellm_peer import litellm_version, start_litellm

            print("LiteLLM proxy", flush=True)
            url, process = start_litellm(self.stack, upstream, self.server_cpu)
            self.m.peers["LiteLLM"] = litellm_version()
            self.throughput("LiteLLM", url, body=orjson.dumps(
                {"model": "bench-model", "messages": [{"role": "user", "content": "Hello!"}]}
            ).decode())
            self.stack.end(process)
        return self.m

    def gateway(self, upstream: str, redis_port: int) -> None:
        config = gateway_config(upstream, f"redis://127.0.0.1:{redis_port}/0",
                                ("bench-model", "bench-large", "bench-coder"))
        url, process = self.stack.gateway("gateway", config, self.server_cpu)
        self.m.rss_idle = rss_mb(process.pid)
        print("gateway, affinity off", flush=True)
        self.throughput("gateway, affinity off", url)
        print("gateway, affinity on: pinning sessions", flush=True)
        pinned = self.load(url, connections=16, requests_per_connection=SESSIONS // 16 + 1,
                           duration=60, affinity=SESSIONS)
        self.m.pin_statuses = pinned["statuses"]
        before = command_stats(redis_port)
        self.throughput("gateway, affinity on", url, affinity=SESSIONS)
        after = command_stats(redis_port)
        requests = sum(self.m.throughput["gateway, affinity on"][k] for k in ("requests", "warmup"))
        requests += sum(self.m.single["gateway, affinity on"][k] for k in ("requests", "warmup"))
        self.m.redis_commands = {k: after[k] - before.get(k, 0) for k in after
                                 if after[k] != before.get(k, 0)}
        self.m.redis_requests = requests
        half = round(self.m.throughput["gateway, affinity on"]["rps"] / 2)
        print(f"half-saturating open loop at {half} req/s", flush=True)
        self.m.half_rate = half
        self.m.half["gateway, affinity on"] = self.load(
            url, connections=16, duration=self.duration, rate=half, affinity=SESSIONS)
        self.m.half["direct"] = self.load(upstream, connections=16, duration=self.short, rate=half)
        print("streaming", flush=True)
        self.m.streams["gateway, affinity on"] = self.load(
            url, connections=1, duration=self.short, stream=True, chunks=STREAM_CHUNKS,
            affinity=SESSIONS)
        self.m.paced = self.load(
            url, connections=PACED["connections"], requests_per_connection=1, duration=30,
            stream=True, chunks=PACED["chunks"], interval_ms=PACED["interval_ms"],
            affinity=SESSIONS)
        self.m.rss_after = rss_mb(process.pid)
        self.stack.end(process)


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, "
            f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}")


def main() -> int:
    exit_on_sigterm()
    if subprocess.run(["which", "taskset"], capture_output=True).returncode != 0:
        print("bench: taskset is missing (util-linux)", file=sys.stderr)
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="agw-bench-") as tmp, Stack(Path(tmp)) as stack:
            measurements = Bench(stack).run()
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        return 130
    except RuntimeError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    measurements.machine = machine()
    text = render(measurements)
    print(text)
    (RESULTS / "bench.md").write_text(text)
    (RESULTS / "bench.json").write_bytes(
        orjson.dumps(measurements.as_dict(), option=orjson.OPT_INDENT_2))
    print(f"written: {RESULTS / 'bench.md'}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())

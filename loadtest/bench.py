"""`make bench`: what the gateway adds, side by side with references, from one run.

Servers run on one core (BENCH_SERVER_CPU, default 0); the load generator, the fake upstream
and Redis on the other (BENCH_LOAD_CPU, default 1), pinned with `taskset`. Measured, each
against the same near-zero-cost upstream (loadtest/upstream.py, a canned-answer asyncio server
standing in for nginx `return 200`):

- direct to the upstream; an empty Starlette handler that parses the body and answers; a
  minimal Starlette proxy over aiohttp; the gateway with affinity off (no header) and on
  (every request carries one of 1,000 session ids, all pinned beforehand, Redis store);
  LiteLLM's proxy when BENCH_PEERS=litellm (see loadtest/litellm_peer.py);
- 16 connections closed loop for BENCH_DURATION s (default 3): requests/s, p50, p99;
- 1 connection: p50, and added latency = server p50 - direct p50;
- all of the above in BENCH_ROUNDS interleaved rounds (default 3), keeping each server's best
  round, so load from elsewhere on the machine skews no one comparison;
- open loop at half the gateway's saturating rate: p99;
- streaming at 1 connection: added time to first token, SSE events out == events in;
  256 concurrent paced streams: all complete, longest silence inside a stream;
- Redis commands per pinned request (`INFO commandstats` deltas); gateway RSS idle and after.

BENCH_COMPARE=label=/other/checkout adds that checkout's gateway to every round.
BENCH_TRACING=100,1 adds gateways tracing that percentage of requests (OpenTelemetry, the
[tracing] extra) to a local OTLP/HTTP sink, affinity on, to price tracing in the same rounds.

Prints a markdown table and writes loadtest/results/bench.md (and bench.json).
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import GATEWAY, Measurements, render
from stack import (
    RESULTS,
    ROOT,
    Stack,
    command_stats,
    cpu_seconds,
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
CHAT_CODER = "gateway, chat, vllm/bench-coder"
RESPONSES = "gateway, /v1/responses translated, vllm/bench-coder"
CODER_CHAT = {"model": "vllm/bench-coder", "messages": [{"role": "user", "content": "hello"}]}
CODER_RESPONSES = {"model": "vllm/bench-coder", "input": "hello", "store": False}


class Bench:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.server_cpu = os.environ.get("BENCH_SERVER_CPU", "0")
        self.load_cpu = os.environ.get("BENCH_LOAD_CPU", "1")
        self.duration = float(os.environ.get("BENCH_DURATION", "3"))
        self.rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
        self.m = Measurements(stream_events=STREAM_CHUNKS + 1, paced_shape=dict(PACED),
                              rounds=self.rounds)
        self.redis_port = 0
        self.pids: dict[str, int] = {}  # server url -> pid, for CPU per request
        self.before: dict[str, int] = {}
        self.traced: dict[str, float] = {}  # traced gateway url -> percent sampled

    def load(self, url: str, **options: Any) -> dict[str, Any]:
        """One load generator run, pinned to the load core; its JSON summary, with the CPU
        time the server spent per request (interference from elsewhere on the machine lowers
        requests/s but barely changes CPU per request)."""
        pid = self.pids.get(url)
        cpu = cpu_seconds(pid) if pid else 0.0
        argv = [sys.executable, str(HERE / "loadgen.py"), "--url", url + options.pop("path", PATH)]
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
        if pid:
            served = max(1, result["requests"] + result["warmup"])
            result["cpu_us"] = round((cpu_seconds(pid) - cpu) / served * 1e6, 1)
        return result

    def counted(self, url: str, **options: Any) -> dict[str, Any]:
        """A run of pinned requests, with the Redis commands it caused added up."""
        before = command_stats(self.redis_port)
        result = self.load(url, **options)
        after = command_stats(self.redis_port)
        for name, calls in after.items():
            if calls != before.get(name, 0):
                self.m.redis_commands[name] = (
                    self.m.redis_commands.get(name, 0) + calls - before.get(name, 0))
        self.m.redis_requests += result["requests"] + result["warmup"]
        return result

    def best(self, table: dict[str, Any], name: str, result: dict[str, Any], key: str,
             higher: bool) -> None:
        """Keep the best round: other load on a shared machine only ever makes runs worse."""
        kept = table.get(name)
        if kept is None or (result[key] > kept[key] if higher else result[key] < kept[key]):
            table[name] = result

    def upstream(self) -> str:
        port = free_port()
        process = self.stack.spawn(
            "upstream", [sys.executable, str(HERE / "upstream.py"), "--port", str(port)],
            self.load_cpu)
        self.stack.wait_tcp(process, "upstream", port)
        self.pids[f"http://127.0.0.1:{port}"] = process.pid
        return f"http://127.0.0.1:{port}"

    def baseline(self, kind: str, upstream: str) -> str:
        port = free_port()
        process = self.stack.spawn(kind, [
            sys.executable, str(HERE / "baseline.py"), kind, "--port", str(port),
            "--upstream", upstream], self.server_cpu)
        self.stack.wait_tcp(process, kind, port)
        self.pids[f"http://127.0.0.1:{port}"] = process.pid
        return f"http://127.0.0.1:{port}"

    def run(self) -> Measurements:
        """Every server starts at once (idle ones cost nothing), then rounds interleave them."""
        upstream = self.upstream()
        self.redis_port, _ = self.stack.redis(self.load_cpu)
        config = gateway_config(upstream, f"redis://127.0.0.1:{self.redis_port}/0",
                                ("bench-model", "bench-large", "bench-coder"))
        gateway, process = self.stack.gateway("gateway", config, self.server_cpu)
        self.m.rss_idle = rss_mb(process.pid)
        self.pids[gateway] = process.pid
        servers: list[tuple[str, str, dict[str, Any]]] = [
            ("direct", upstream, {}),
            ("empty Starlette", self.baseline("empty", upstream), {}),
            ("Starlette + aiohttp proxy", self.baseline("proxy", upstream), {}),
            ("gateway, affinity off", gateway, {}),
            (GATEWAY, gateway, {"affinity": SESSIONS}),
            # The Responses API translated to Chat Completions, beside the same model's chat
            # (store: false, so the figure is the translation's; storing adds a Redis write;
            # no affinity id: the benchmark's pins name a model served natively).
            (CHAT_CODER, gateway, {"body": orjson.dumps(CODER_CHAT).decode()}),
            (RESPONSES, gateway, {"path": "/v1/responses",
                                  "body": orjson.dumps(CODER_RESPONSES).decode()}),
        ]
        for label, path in compared():
            other, other_process = self.stack.gateway(
                f"gateway-{label}", config, self.server_cpu, {"PYTHONPATH": path})
            self.pids[other] = other_process.pid
            servers += [(f"gateway [{label}], affinity off", other, {}),
                        (f"gateway [{label}], affinity on", other, {"affinity": SESSIONS})]
        for percent in traced():
            sink = self.upstream()  # answers 200 to any POST: an OTLP/HTTP sink that discards
            tracing = {"otlp_endpoint": sink, "sample_ratio": percent / 100}
            url, traced_process = self.stack.gateway(
                f"gateway-tracing-{percent:g}", {**config, "tracing": tracing}, self.server_cpu)
            self.pids[url] = traced_process.pid
            self.traced[url] = percent
            servers.append((f"gateway, tracing {percent:g}%, affinity on", url, {"affinity": SESSIONS}))
        if "litellm" in os.environ.get("BENCH_PEERS", "").split(","):
            from litellm_peer import litellm_version, start_litellm

            print("starting LiteLLM", flush=True)
            peer, peer_process = start_litellm(self.stack, upstream, self.server_cpu)
            self.pids[peer] = peer_process.pid
            servers.append(("LiteLLM", peer, {}))
            self.m.peers["LiteLLM"] = litellm_version()
        print(f"pinning {SESSIONS} sessions", flush=True)
        pinned = self.load(gateway, connections=16, requests_per_connection=SESSIONS // 16 + 1,
                           duration=60, affinity=SESSIONS)
        self.m.pin_statuses = pinned["affinity"]
        for round_ in range(1, self.rounds + 1):
            for name, url, options in servers:
                print(f"round {round_}/{self.rounds}: {name}", flush=True)
                run = self.counted if name == GATEWAY else self.load
                result = run(url, connections=16, duration=self.duration, warmup=0.5, **options)
                self.best(self.m.throughput, name, result, "rps", higher=True)
                self.m.cpu[name] = min(self.m.cpu.get(name, 1e9), result.get("cpu_us", 0.0))
                self.best(self.m.single, name, run(
                    url, connections=1, duration=self.duration / 2, warmup=0.3, **options),
                    "p50_ms", higher=False)
            for name, url, options in (servers[0], servers[4], servers[5], servers[6]):
                self.best(self.m.streams, name, self.load(
                    url, connections=1, duration=self.duration / 2, stream=True,
                    chunks=STREAM_CHUNKS, **options), "ttft_p50_ms", higher=False)
        self.rest(upstream, gateway)
        self.m.rss_after = rss_mb(process.pid)
        for url, percent in self.traced.items():
            print(f"tracing {percent:g}%: spans dropped {spans_dropped(url)}", flush=True)
        return self.m

    def rest(self, upstream: str, gateway: str) -> None:
        half = round(self.m.throughput[GATEWAY]["rps"] / 2)
        self.m.half_rate = half
        for round_ in range(1, self.rounds + 1):
            print(f"round {round_}/{self.rounds}: open loop at {half} req/s", flush=True)
            self.best(self.m.half, GATEWAY, self.counted(
                gateway, connections=16, duration=self.duration, rate=half, affinity=SESSIONS),
                "p99_ms", higher=False)
        self.m.half["direct"] = self.load(
            upstream, connections=16, duration=self.duration, rate=half)
        # Not counted in Redis commands per request: a burst of first lookups, measured apart.
        print(f"{PACED['connections']} concurrent streams", flush=True)
        self.m.paced = self.load(
            gateway, connections=PACED["connections"], requests_per_connection=1, duration=30,
            stream=True, chunks=PACED["chunks"], interval_ms=PACED["interval_ms"],
            affinity=SESSIONS)


def compared() -> list[tuple[str, str]]:
    """BENCH_COMPARE=label=/path/to/checkout[,...]: more gateways, each importing `gateway`
    from that checkout, measured in the same rounds (to price a change against main)."""
    pairs = [p.partition("=") for p in os.environ.get("BENCH_COMPARE", "").split(",") if p]
    return [(label, str(Path(path).resolve())) for label, _, path in pairs]


def traced() -> list[float]:
    """BENCH_TRACING=100,1: the sampling percentages of the traced gateways to add."""
    return [float(p) for p in os.environ.get("BENCH_TRACING", "").split(",") if p]


def spans_dropped(url: str) -> dict[str, float]:
    """A traced gateway's gateway_trace_spans_dropped_total, by reason."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("gateway_trace_spans_dropped_total{")}


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

"""Head flood: how `/healthz` and memory hold while clients send request heads that never end.

    .venv/bin/python loadtest/flood.py [--seconds 5] [--unguarded]

Starts `affinity-gateway serve` (or, with --unguarded, the same app under uvicorn's own httptools
protocol, which is how the gateway ran before gateway/server.py), then four flooders: two send
16 KiB header lines as fast as they can, two send a short header line every 50 ms; each starts a
new connection when the server ends one. Meanwhile a prober opens a connection per `/healthz`
(as a kubelet does). Prints the probe latency (p50, p99, max), the server's RSS growth over idle
and how the flooders' connections ended. The timing targets of issue 18 (healthz under 100 ms,
RSS within 50 MB of idle) live here, not in the tests.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import BIN, Stack, free_port, rss_mb

FAST_LINE = b"X-Flood: " + b"f" * 16384 + b"\r\n"
SLOW_LINE = b"X-Slow: s\r\n"
RSS_CEILING_MB = 500.0  # stop an unguarded run before it takes the machine down


def config() -> dict[str, object]:
    return {
        "model_providers": [{"model": "openai/gpt-4o-mini", "base_url": "http://127.0.0.1:9"}],
        "logging": {"level": "error"},
        "limits": {"header_timeout_seconds": 2},  # (default 10) so the slow flooders meet it here
    }


def flood(port: int, line: bytes, pause: float, stop: threading.Event, outcomes: Counter[str]) -> None:
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: gateway\r\n")
                while not stop.is_set() and not select.select([sock], [], [], 0)[0]:
                    sock.sendall(line)
                    if pause:
                        time.sleep(pause)
                if stop.is_set():
                    return
                answer = sock.recv(64)
        except OSError:
            answer = b""
        outcomes[answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"] += 1


def probe(port: int) -> float:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    if not received.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/healthz answered {received[:40]!r}")
    return time.perf_counter() - started


def run(stack: Stack, seconds: float, unguarded: bool) -> None:
    if unguarded:
        path = stack.workdir / "gateway.yaml"
        path.write_text(yaml.safe_dump(config()))
        port = free_port()
        process = stack.spawn("gateway", [
            str(BIN / "python"), "-m", "uvicorn", "gateway.app:app_from_env", "--factory",
            "--http", "httptools", "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "error",
        ], env={"AFFINITY_GATEWAY_CONFIG": str(path)})
        stack.wait_http(process, "gateway", f"http://127.0.0.1:{port}/readyz")
    else:
        url, process = stack.gateway("gateway", config())
        port = int(url.rsplit(":", 1)[1])
    for _ in range(200):
        probe(port)
    idle = rss_mb(process.pid)
    quiet = sorted(probe(port) for _ in range(200))
    stop = threading.Event()
    outcomes: list[Counter[str]] = [Counter() for _ in range(4)]
    kinds = [(FAST_LINE, 0.0), (FAST_LINE, 0.0), (SLOW_LINE, 0.05), (SLOW_LINE, 0.05)]
    threads = [threading.Thread(target=flood, args=(port, line, pause, stop, outcomes[i]), daemon=True)
               for i, (line, pause) in enumerate(kinds)]
    for thread in threads:
        thread.start()
    latencies: list[float] = []
    peak = idle
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and peak - idle < RSS_CEILING_MB:
            latencies.append(probe(port))
            peak = max(peak, rss_mb(process.pid))
            time.sleep(0.01)
    finally:
        stop.set()
        stack.end(process)  # an unguarded server may never end the flooders' connections
        for thread in threads:
            thread.join(timeout=5)
    latencies.sort()
    label = "uvicorn httptools (unguarded)" if unguarded else "affinity-gateway serve"
    print(f"{label}: {seconds:g} s of flood, {len(latencies)} probes")
    print(f"  /healthz quiet:  p50 {ms(quiet, 0.5)}  p99 {ms(quiet, 0.99)}  max {ms(quiet, 1.0)}")
    print(f"  /healthz flood:  p50 {ms(latencies, 0.5)}  p99 {ms(latencies, 0.99)}  max {ms(latencies, 1.0)}")
    print(f"  RSS: idle {idle:.1f} MB, peak {peak:.1f} MB (+{peak - idle:.1f} MB)")
    for (line, _), outcome in zip(kinds, outcomes, strict=True):
        kind = "fast" if line is FAST_LINE else "slow"
        print(f"  {kind} flooder: connections ended by " + (
            ", ".join(f"{key} x{count}" for key, count in sorted(outcome.items())) or "nothing"))


def ms(values: list[float], quantile: float) -> str:
    if not values:
        return "-"
    index = min(len(values) - 1, int(quantile * len(values)))
    return f"{values[index] * 1000:.1f} ms" if quantile < 1 else f"{max(values) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--unguarded", action="store_true")
    args = parser.parse_args()
    with TemporaryDirectory(prefix="agw-flood-") as workdir, Stack(Path(workdir)) as stack:
        run(stack, args.seconds, args.unguarded)


if __name__ == "__main__":
    main()

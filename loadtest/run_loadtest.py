"""`make loadtest`: a private Redis, the simulator and three gateway replicas, then locust.

Runs locust headless for LOADTEST_DURATION seconds (default 30) with LOADTEST_USERS users
(default 24) spread over the three replicas, prints locust's statistics and a final line
`affinity violations: N`, writes CSV and HTML reports under loadtest/results/, and exits
non-zero when N > 0 or any request failed. Everything it starts, it stops (Ctrl-C too).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import RESULTS, ROOT, Stack, exit_on_sigterm, gateway_config, rss_mb

REPLICAS = 3


def run() -> int:
    duration = int(os.environ.get("LOADTEST_DURATION", "30"))
    users = int(os.environ.get("LOADTEST_USERS", "24"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = RESULTS / "locust_summary.json"
    summary.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="agw-loadtest-") as tmp, Stack(Path(tmp)) as stack:
        redis_port, _ = stack.redis()
        upstream, _ = stack.simulator()
        config = gateway_config(upstream, f"redis://127.0.0.1:{redis_port}/0")
        started = [stack.gateway(f"gateway-{i}", config) for i in range(REPLICAS)]
        replicas = [url for url, _ in started]
        print(f"redis :{redis_port}, simulator {upstream}, replicas {' '.join(replicas)}",
              flush=True)
        command = [
            sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
            "--headless", "--users", str(users), "--spawn-rate", str(max(1, users // 2)),
            "--run-time", f"{duration}s", "--stop-timeout", "10", "--host", replicas[0],
            "--csv", str(RESULTS / "locust"), "--html", str(RESULTS / "locust.html"),
            "--only-summary", "--loglevel", "WARNING",
        ]
        env = {**os.environ, "LOADTEST_HOSTS": ",".join(replicas[1:]),
               "LOADTEST_SUMMARY": str(summary)}
        begun = time.monotonic()
        locust = subprocess.Popen(command, env=env, cwd=ROOT)
        # RSS once warmed up, half-way and at the end: a long run (a soak) shows growth, and
        # whether it levels off (bounded caches filling) or keeps going (a leak).
        samples: list[list[float]] = []
        try:
            for moment in (min(60.0, duration * 0.2), duration * 0.5):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    locust.wait(timeout=max(0.0, moment - (time.monotonic() - begun)))
                samples.append([rss_mb(process.pid) for _, process in started])
            code = locust.wait()
            samples.append([rss_mb(process.pid) for _, process in started])
        finally:
            if locust.poll() is None:  # interrupted: locust goes first, then the stack
                locust.terminate()
                locust.wait()
    if not summary.exists():
        print(f"locust exited with {code} and wrote no summary", file=sys.stderr)
        return code or 1
    result = orjson.loads(summary.read_bytes())
    print("replica RSS MB, warmed up -> half-way -> end: " + ", ".join(
        " -> ".join(f"{mb:.1f}" for mb in replica) for replica in zip(*samples, strict=True)))
    print(f"reports: {RESULTS}/locust_stats.csv, {RESULTS}/locust.html")
    print(f"requests: {result['requests']}, failures: {result['failures']}")
    print(f"affinity violations: {result['violations']}")
    if result["violations"] or result["failures"] or not result["requests"] or code:
        return 1
    return 0


def main() -> int:
    exit_on_sigterm()
    try:
        return run()
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        return 130
    except RuntimeError as error:  # a process that failed to start: its log tail is the message
        print(f"loadtest: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

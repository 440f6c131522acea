"""The locust load test, short: agent sessions over two real replicas sharing Redis keep one
model per session; replicas that do not share pins are caught violating affinity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.configs import three_models
from tests.support import ThreadServer, gateway

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"


def run_locust(replicas: list[ThreadServer], tmp_path: Path) -> tuple[int, dict[str, Any]]:
    """Locust in its own process: it monkey-patches the standard library with gevent."""
    summary = tmp_path / "summary.json"
    env = {**os.environ, "LOADTEST_HOSTS": ",".join(r.url for r in replicas[1:]),
           "LOADTEST_SUMMARY": str(summary), "LOADTEST_STREAM_SHARE": "0.5"}
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--users", "6",
         "--spawn-rate", "6", "--run-time", "3s", "--stop-timeout", "10", "--host", replicas[0].url,
         "--csv", str(tmp_path / "locust"), "--only-summary", "--loglevel", "WARNING"],
        env=env, capture_output=True, text=True, timeout=90,
    )
    assert summary.exists(), result.stderr[-3000:]
    return result.returncode, orjson.loads(summary.read_bytes())


def test_sessions_over_replicas_sharing_redis_keep_their_model(
    simulator: ThreadServer, redis_url: str, tmp_path: Path
) -> None:
    config = three_models(simulator.url, redis_url)
    with gateway(config) as a, gateway(config) as b:
        code, summary = run_locust([a, b], tmp_path)
    assert summary["violations"] == 0
    assert summary["failures"] == 0
    assert summary["sessions"] > 0
    statuses = summary["statuses"]
    assert 0 < statuses["new"] <= summary["sessions"]  # one pin per session at most
    assert statuses["hit"] > statuses["new"]
    assert summary["statuses"]["none"] > 0  # the client without the header ran too
    assert set(summary["unpinned_models"]) == {"vllm/coder", "openai/gpt-4o"}
    assert code == 0
    affinity_csv = (tmp_path / "locust_affinity.csv").read_text()
    assert "violations,0" in affinity_csv


def test_replicas_with_private_pins_are_caught_violating_affinity(
    simulator: ThreadServer, tmp_path: Path
) -> None:
    config = three_models(simulator.url)  # memory store: each replica pins on its own
    with gateway(config) as a, gateway(config) as b:
        code, summary = run_locust([a, b], tmp_path)
    assert summary["violations"] > 0
    assert summary["failures"] >= summary["violations"]
    assert code != 0

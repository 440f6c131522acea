"""Graceful shutdown of `affinity-gateway serve`: SIGTERM during a stream lets it finish.

The gateway runs as the real command in a subprocess (uvicorn, its signal handling and its
drain), over a slow simulator, so a stream is in flight when the signal lands.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.simulator import SimulatorSettings, create_simulator_app
from gateway.sse import SSEDecoder
from tests.configs import three_models
from tests.support import ThreadServer, free_port, serve, wait_for

BODY = {"model": "fast", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
TOKENS = 30
TOKENS_PER_S = 20.0  # a 1.5 s stream: long enough to signal in the middle of it


@pytest.fixture(scope="module")
def slow_simulator() -> Iterator[ThreadServer]:
    settings = SimulatorSettings(tokens_per_s=TOKENS_PER_S, answer_tokens=TOKENS)
    with serve(create_simulator_app(settings)) as server:
        yield server


class Served:
    """`python -m gateway serve` on a free port; stderr kept for the failure message."""

    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        path = directory / "config.yaml"
        path.write_bytes(orjson.dumps(config))  # JSON is YAML
        self.port = free_port()
        self.log = (directory / "serve.log").open("w+b")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AFFINITY_", "PROMETHEUS_"))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path),
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        wait_for(self.ready, timeout=30, message=f"gateway did not start: {self.output()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        assert self.process.poll() is None, self.output()
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def refuses_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return False
        except OSError:
            return True

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def run(config: dict[str, Any]) -> Served:
        started.append(Served(config, tmp_path))
        return started[-1]

    yield run
    for served in started:
        served.stop()


def config(upstream: str, drain_seconds: int) -> dict[str, Any]:
    result = three_models(upstream)
    result["server"] = {"drain_timeout_seconds": drain_seconds}
    result["logging"] = {"level": "warning"}
    return result


def content_of(raw: bytes) -> tuple[str, list[str]]:
    decoder = SSEDecoder()
    events = [e.data for e in decoder.feed(raw) + decoder.flush()]
    text = ""
    for data in events:
        if data != "[DONE]":
            for choice in orjson.loads(data).get("choices", []):
                text += choice["delta"].get("content") or ""
    return text, events


def test_sigterm_mid_stream_finishes_the_stream_then_exits(
    start: Any, slow_simulator: ThreadServer
) -> None:
    expected, _ = content_of(httpx.post(f"{slow_simulator.url}/v1/chat/completions",
                                        json={**BODY, "model": "gpt-4o-mini"}, timeout=30).content)
    served = start(config(slow_simulator.url, drain_seconds=20))
    received = b""
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=BODY, timeout=30) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        received += next(chunks)
        signalled = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        # The listener closes while the stream is still going.
        wait_for(served.refuses_connections, timeout=5, message="still accepting after SIGTERM")
        assert served.process.poll() is None
        for part in chunks:
            received += part
    text, events = content_of(received)
    assert events[-1] == "[DONE]"
    assert text == expected and len(text.split()) == TOKENS
    assert served.process.wait(timeout=20) == 0, served.output()
    assert time.monotonic() - signalled < 20
    assert "Traceback" not in served.output()


def test_a_stream_past_the_drain_timeout_ends_with_an_error_event_and_the_exit_is_clean(
    start: Any,
) -> None:
    settings = SimulatorSettings(tokens_per_s=2, answer_tokens=200)  # 100 s: far past the drain
    with serve(create_simulator_app(settings)) as endless:
        served = start(config(endless.url, drain_seconds=1))
        with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=BODY,
                          timeout=30) as response:
            chunks = response.iter_raw()
            received = next(chunks)
            signalled = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            for part in chunks:  # the stream ends in-band, not with a cut connection
                received += part
        assert served.process.wait(timeout=15) == 0, served.output()
        assert time.monotonic() - signalled < 10
    _, events = content_of(received)
    assert "error" in orjson.loads(events[-1]), events[-1]
    assert "[DONE]" not in events

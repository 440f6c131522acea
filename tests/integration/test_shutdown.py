"""Graceful shutdown of `affinity-gateway serve`: SIGTERM during a stream lets it finish.

The gateway runs as the real command in a subprocess (uvicorn, its signal handling and its
drain), over a slow simulator, so a stream is in flight when the signal lands.
"""

from __future__ import annotations

import signal
import threading
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
from tests.support import Served, ThreadServer, serve, wait_for

BODY = {"model": "fast", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
TOKENS = 30
TOKENS_PER_S = 20.0  # a 1.5 s stream: long enough to signal in the middle of it


@pytest.fixture(scope="module")
def slow_simulator() -> Iterator[ThreadServer]:
    settings = SimulatorSettings(tokens_per_s=TOKENS_PER_S, answer_tokens=TOKENS)
    with serve(create_simulator_app(settings)) as server:
        yield server


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
    assert orjson.loads(events[-1])["error"]["code"] == "shutting_down", events[-1]
    assert "[DONE]" not in events
    assert "Traceback" not in served.output() and "Exception in ASGI" not in served.output()


def test_a_whole_answer_past_the_drain_timeout_is_a_503_envelope_not_a_crash(start: Any) -> None:
    settings = SimulatorSettings(ttft_ms=60_000)  # the upstream answers long after the drain
    with serve(create_simulator_app(settings)) as silent:
        served = start(config(silent.url, drain_seconds=1))
        answers: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{served.url}/v1/chat/completions", json={**BODY, "stream": False}, timeout=30)))
        asking.start()
        wait_for(lambda: httpx.get(f"{silent.url}/_simulator/requests").json(),
                 message="the request did not reach the upstream")
        served.process.send_signal(signal.SIGTERM)
        asking.join(timeout=20)
        assert served.process.wait(timeout=15) == 0, served.output()
    [answer] = answers
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "shutting_down"
    assert answer.headers["retry-after"] == "1" and answer.headers["x-request-id"]
    assert "Traceback" not in served.output() and "Exception in ASGI" not in served.output()

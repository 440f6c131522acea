"""Request errors, streaming and disconnects through a real gateway replica."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest

from gateway.apis import CHAT, Exchange
from gateway.simulator import SimulatorSettings, create_simulator_app
from gateway.types import Receive, Scope, Send
from tests.configs import three_models
from tests.support import Served, ThreadServer, answer_lifespan, gateway, serve, wait_for

GOOD = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def replica(simulator: ThreadServer) -> Any:
    config = three_models(simulator.url)
    config["limits"] = {"max_body_bytes": 4096}
    with gateway(config) as server:
        yield server


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"model": "fast"}', 400, "missing_required_parameter"),
        (b'{"model": "fast", "messages": "hi"}', 400, "invalid_type"),
        (b'{"model": "fast", "messages": []}', 400, "invalid_type"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', 400, "invalid_type"),
        (b'{"model": "fast", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}',
         400, "invalid_type"),
        (b'{"model": "fast", "messages": [{"role": 7, "content": "x"}]}', 400, "invalid_value"),
        (b'{"model": "gpt-99", "messages": [{"role": "user", "content": "x"}]}', 404, "model_not_found"),
        (b'{"model": "fast", "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}',
         413, "body_too_large"),
    ],
)
def test_bad_requests_get_their_status_and_envelope(
    replica: ThreadServer, body: bytes, status: int, code: str
) -> None:
    response = httpx.post(f"{replica.url}/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"]
    # and nothing is lost: the next good request works
    assert httpx.post(f"{replica.url}/v1/chat/completions", json=GOOD).status_code == 200


def test_wrong_method_and_unknown_path(replica: ThreadServer) -> None:
    response = httpx.get(f"{replica.url}/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    response = httpx.post(f"{replica.url}/v2/nothing", json=GOOD)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_upstream_errors_map_to_gateway_statuses() -> None:
    for fail_status, expected in ((500, 502), (503, 503), (400, 400), (401, 502)):
        upstream = create_simulator_app(SimulatorSettings(fail_rate=1.0, fail_status=fail_status))
        with serve(upstream) as sim, gateway(three_models(sim.url)) as server:
            response = httpx.post(f"{server.url}/v1/chat/completions", json=GOOD)
            assert response.status_code == expected, fail_status
            assert f"returned {fail_status}" in response.json()["error"]["message"]
            assert "sk-provider-secret" not in response.text


def test_unreachable_upstream_is_503_and_the_gateway_stays_up() -> None:
    with serve(create_simulator_app(SimulatorSettings())) as sim:
        dead = sim.url
    with gateway(three_models(dead)) as server:
        response = httpx.post(f"{server.url}/v1/chat/completions", json=GOOD)
        assert response.status_code == 503
        assert httpx.get(f"{server.url}/healthz").status_code == 200


async def start_event_stream(scope: Scope, receive: Receive, send: Send) -> bool:
    """A scripted upstream's start: the lifespan answered (False), or the request read and an
    event stream's head sent (True)."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return False
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    return True


class PausingUpstream:
    """Streams one chunk, then waits for the test's go-ahead before the rest."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await start_event_stream(scope, receive, send):
            return
        chunk = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",' \
                b'"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n'
        await send({"type": "http.response.body", "body": chunk % b"first", "more_body": True})
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": chunk % b"last", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def test_stream_chunks_arrive_before_the_upstream_finishes() -> None:
    upstream = PausingUpstream()
    with serve(upstream) as up, gateway(three_models(up.url)) as server:
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        with sdk, sdk.chat.completions.create(model="fast", messages=GOOD["messages"], stream=True) as stream:
            chunks = iter(stream)
            first = next(chunks)
            assert first.choices[0].delta.content == "first"
            assert not upstream.release.is_set()  # the upstream has not sent the last chunk yet
            upstream.release.set()
            rest = [c.choices[0].delta.content for c in chunks]
        assert rest == ["last"]


class LingeringUpstream:
    """Streams a whole answer, usage and [DONE] included, then holds its response open."""

    def __init__(self) -> None:
        self.release = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await start_event_stream(scope, receive, send):
            return
        head = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        await send({"type": "http.response.body", "more_body": True, "body":
                    head + b'[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
                    + head + b'[],"usage":{"prompt_tokens":11,"completion_tokens":7}}\n\n'
                    + b"data: [DONE]\n\n"})
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})


def test_a_client_that_leaves_after_the_last_event_still_has_its_tokens_counted() -> None:
    """A client closes as soon as it reads [DONE], often before the upstream's end arrives:
    the request is still recorded as a 200 with the tokens the upstream reported."""
    upstream = LingeringUpstream()
    with serve(upstream) as up, gateway(three_models(up.url)) as server:
        try:
            body = {**GOOD, "stream": True, "stream_options": {"include_usage": True}}
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line == "data: [DONE]":
                        break

            def tokens() -> list[str]:
                return [line for line in httpx.get(f"{server.url}/metrics").text.splitlines()
                        if line.startswith("gateway_tokens_total")]

            counted = wait_for(lambda: tokens(), message="the tokens of the stream were not counted")
            assert any('kind="prompt"' in line and line.endswith(" 11.0") for line in counted)
            assert any('kind="completion"' in line and line.endswith(" 7.0") for line in counted)
            assert not upstream.release.is_set()  # counted while the upstream had not ended
        finally:
            upstream.release.set()


def test_client_disconnect_closes_the_upstream_stream() -> None:
    slow = create_simulator_app(SimulatorSettings(tokens_per_s=20, answer_tokens=200))
    with serve(slow) as sim, gateway(three_models(sim.url)) as server:
        body = {**GOOD, "stream": True}
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            next(response.iter_bytes())
        def stats() -> dict[str, int]:
            return dict(httpx.get(f"{sim.url}/_simulator/stats").json())
        started = time.monotonic()
        wait_for(lambda: stats()["cancelled_streams"] == 1, timeout=5,
                 message=f"upstream stream still open: {stats()}")
        assert stats()["completed_streams"] == 0
        assert time.monotonic() - started < 5


def test_routing_decision_endpoint_shares_pins(replica: ThreadServer) -> None:
    url = f"{replica.url}/routing/v1/chat/completions"
    body = {"messages": [{"role": "user", "content": "write a function that parses CSV code"}]}
    first = httpx.post(url, json=body, headers={"X-Model-Affinity": "decide-1"}).json()
    assert first["models"][0] == "vllm/coder" and first["route"] == "code_generation"
    assert first["pinned"] is False and first["session_id"] == "decide-1"
    body = {"messages": [{"role": "user", "content": "explain this with detailed multi-step analysis"}]}
    second = httpx.post(url, json=body, headers={"X-Model-Affinity": "decide-1"}).json()
    assert second["models"] == ["vllm/coder"] and second["pinned"] is True
    unpinned = httpx.post(url, json=body).json()
    assert unpinned["models"] == ["openai/gpt-4o"] and unpinned["pinned"] is False
    served = httpx.post(f"{replica.url}/v1/chat/completions", json=body,
                        headers={"X-Model-Affinity": "decide-1"})
    assert served.headers["x-gateway-model"] == "vllm/coder"


def test_a_bug_is_a_500_envelope_not_a_traceback(
    replica: ThreadServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(payload: dict[str, Any], raw: bytes, model_id: str) -> bytes:
        raise RuntimeError("secret internals")

    exchanges = cast(dict[str, Exchange], CHAT.exchanges)
    monkeypatch.setitem(exchanges, "openai", dataclasses.replace(exchanges["openai"], request_body=broken))
    response = httpx.post(f"{replica.url}/v1/chat/completions", json=GOOD)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret internals" not in response.text and "Traceback" not in response.text
    monkeypatch.undo()
    assert httpx.post(f"{replica.url}/v1/chat/completions", json=GOOD).status_code == 200


def test_a_client_leaving_mid_body_is_counted_499_and_nothing_breaks(replica: ThreadServer) -> None:
    with socket.create_connection(("127.0.0.1", replica.port)) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{\"messages\":")

    def counted() -> bool:
        return 'status="499"' in httpx.get(f"{replica.url}/metrics").text

    wait_for(counted, timeout=10, message="the abandoned request was not counted as 499")
    assert httpx.post(f"{replica.url}/v1/chat/completions", json=GOOD).status_code == 200


@pytest.mark.parametrize("api", ["chat", "messages"])
def test_a_scrape_right_after_a_streamed_request_counts_it(
    simulator: ThreadServer, tmp_path: Path, api: str
) -> None:
    """The counts are written before the stream's last byte, so a scrape that follows the
    stream's end always sees them: 200 times in a row, against a `serve` process."""
    if api == "chat":
        path, endpoint = "/v1/chat/completions", "chat_completions"
        body: dict[str, Any] = {**GOOD, "stream": True}
    else:
        path, endpoint = "/v1/messages", "messages"
        body = {"model": "fast", "max_tokens": 16, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}
    served = Served(three_models(simulator.url), tmp_path)

    def counted(client: httpx.Client) -> float:
        total = 0.0
        for line in client.get(f"{served.url}/metrics").text.splitlines():
            if line.startswith(f'gateway_requests_total{{endpoint="{endpoint}"'):
                total += float(line.rsplit(" ", 1)[1])
        return total

    try:
        with httpx.Client() as streaming, httpx.Client() as scraping:
            before = counted(scraping)
            for turn in range(1, 201):
                with streaming.stream("POST", f"{served.url}{path}", json=body) as response:
                    assert response.status_code == 200
                    for _ in response.iter_bytes():
                        pass
                assert counted(scraping) == before + turn, f"turn {turn} was not counted yet"
    finally:
        served.stop()

"""Upstream failures at each stage, through a real replica, with what the client must see.

The upstreams are small fakes: a scripted raw-ASGI provider (statuses, hangs, stalls) and a
raw asyncio server that resets connections, before the headers or mid-stream.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.sse import SSEDecoder
from gateway.types import Receive, Scope, Send
from tests.configs import CODE, three_models
from tests.support import ThreadServer, answer_lifespan, free_port, gateway, read_all, serve

MESSAGES = [{"role": "user", "content": "hi"}]
WORDS = ["one ", "two ", "three ", "four"]
Step = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def stream_chunks(model: str) -> list[bytes]:
    return [
        chunk(model, {"role": "assistant", "content": ""}),
        *(chunk(model, {"content": word}) for word in WORDS),
        chunk(model, {}, "stop"),
        b"data: [DONE]\n\n",
    ]


async def start(send: Send, status: int, headers: dict[str, str] | None = None,
                content_type: bytes = b"application/json") -> None:
    raw = [(b"content-type", content_type)]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})


async def wait_for_client_to_leave(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def ok() -> Step:
    """A good answer, whole or streamed as the request asked."""

    async def step(payload: dict[str, Any], receive: Receive, send: Send) -> None:
        model = payload.get("model", "?")
        if payload.get("stream"):
            await start(send, 200, content_type=b"text/event-stream")
            for data in stream_chunks(model):
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = {"id": "c-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}}
        await start(send, 200)
        await send({"type": "http.response.body", "body": orjson.dumps(body)})

    return step


def status(code: int, message: str, headers: dict[str, str] | None = None) -> Step:
    async def step(payload: dict[str, Any], receive: Receive, send: Send) -> None:
        await start(send, code, headers)
        body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
        await send({"type": "http.response.body", "body": orjson.dumps(body)})

    return step


def raw_body(body: bytes) -> Step:
    async def step(payload: dict[str, Any], receive: Receive, send: Send) -> None:
        await start(send, 200)
        await send({"type": "http.response.body", "body": body})

    return step


def hang() -> Step:
    """Never answers: no status line, no headers, until the gateway gives up and leaves."""

    async def step(payload: dict[str, Any], receive: Receive, send: Send) -> None:
        await wait_for_client_to_leave(receive)

    return step


def stall(sent: int = 2, end: bool = False) -> Step:
    """Streams `sent` chunks, then stalls until the gateway leaves (or, with `end`, closes the
    body cleanly without the rest of the stream and without [DONE])."""

    async def step(payload: dict[str, Any], receive: Receive, send: Send) -> None:
        await start(send, 200, content_type=b"text/event-stream")
        for data in stream_chunks(payload.get("model", "?"))[:sent]:
            await send({"type": "http.response.body", "body": data, "more_body": True})
        if end:
            await send({"type": "http.response.body", "body": b""})
            return
        await wait_for_client_to_leave(receive)

    return step


class Scripted:
    """A fake OpenAI provider: request N gets step N of its script (the last step repeats);
    `by_model` scripts override the main one for requests naming that upstream model id."""

    def __init__(self, *steps: Step, by_model: dict[str, list[Step]] | None = None) -> None:
        self.steps = list(steps)
        self.by_model = by_model or {}
        self.requests: list[dict[str, Any]] = []

    def count(self, model: str | None = None) -> int:
        return sum(1 for r in self.requests if model is None or r.get("model") == model)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        payload = orjson.loads(await read_all(receive))
        model = payload.get("model")
        steps = self.by_model.get(model, self.steps)
        index = self.count(model) if model in self.by_model else len(self.requests)
        self.requests.append(payload)
        await steps[min(index, len(steps) - 1)](payload, receive, send)


class Resetting:
    """A raw TCP upstream that resets connections: before any header, or after streaming the
    first chunks (once the test has seen them arrive, so none is lost in flight)."""

    def __init__(self, mid_stream: bool) -> None:
        self.mid_stream = mid_stream
        self.port = free_port()
        self.release = threading.Event()
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        payload = orjson.loads(await reader.readexactly(length))
        self.requests += 1
        if self.mid_stream:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            for data in stream_chunks(payload["model"])[:2]:
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
            while not self.release.is_set():
                await asyncio.sleep(0.005)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN

    def __enter__(self) -> Resetting:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop
        ).result(timeout=5)
        self._server = server
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()

        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


def config(upstream: str, **upstream_settings: Any) -> dict[str, Any]:
    result = three_models(upstream)
    result["upstream"] = {"max_retries": 0, "retry_backoff_ms": 1, **upstream_settings}
    return result


@contextmanager
def replica_over(upstream: Any, **upstream_settings: Any) -> Iterator[tuple[ThreadServer, Any]]:
    with serve(upstream) as up, gateway(config(up.url, **upstream_settings)) as server:
        yield server, upstream


def sdk(server: ThreadServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="client-key", max_retries=0)


def post(server: ThreadServer, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=20)


def events(raw: bytes) -> list[Any]:
    decoder = SSEDecoder()
    found = decoder.feed(raw) + decoder.flush()
    return [e.data if e.data == "[DONE]" else orjson.loads(e.data) for e in found]


# --- Before the first byte: retried, then mapped to a gateway status -----------------------


def test_a_500_then_success_is_retried_and_the_client_sees_200() -> None:
    with replica_over(Scripted(status(500, "transient"), ok()), max_retries=1) as (server, up):
        with sdk(server) as client:
            reply = client.chat.completions.create(model="fast", messages=MESSAGES)
        assert reply.choices[0].message.content == "".join(WORDS)
        assert up.count() == 2


def test_a_429_with_retry_after_zero_is_retried() -> None:
    script = Scripted(status(429, "slow down", {"retry-after": "0"}), ok())
    with replica_over(script, max_retries=1) as (server, up):
        response = post(server, {"model": "fast", "messages": MESSAGES, "stream": True})
        assert response.status_code == 200
        assert events(response.content)[-1] == "[DONE]"
        assert up.count() == 2


def test_a_persistent_500_is_a_502_with_the_upstream_message() -> None:
    with replica_over(Scripted(status(500, "the disk is on fire")), max_retries=1) as (server, up):
        with sdk(server) as client, pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="fast", messages=MESSAGES)
        assert caught.value.status_code == 502
        assert "the disk is on fire" in caught.value.message
        assert up.count() == 2  # the first try and one retry, then no more
        assert "sk-provider-secret" not in str(caught.value.body)


def test_a_redirect_is_a_502_and_not_followed() -> None:
    moved = status(307, "moved", {"location": "http://elsewhere.invalid/v1/chat/completions"})
    with replica_over(Scripted(moved), max_retries=0) as (server, up):
        response = post(server, {"model": "fast", "messages": MESSAGES})
        assert response.status_code == 502
        assert "returned 307" in response.json()["error"]["message"]
        assert up.count() == 1


def test_a_429_the_client_must_wait_for_is_passed_on() -> None:
    script = Scripted(status(429, "quota", {"retry-after": "3600"}))
    with replica_over(script, max_retries=2) as (server, up):
        response = post(server, {"model": "fast", "messages": MESSAGES})
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert up.count() == 1  # an hour is too long to hold the client: no retry


def test_no_headers_before_the_first_byte_timeout_is_a_504() -> None:
    with replica_over(Scripted(hang()), first_byte_timeout_ms=300) as (server, _):
        with sdk(server) as client, pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="fast", messages=MESSAGES, stream=True)
        assert caught.value.status_code == 504
        assert caught.value.body["type"] == "timeout_error"  # type: ignore[index]
        assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_a_reset_before_the_headers_is_a_502_or_503() -> None:
    with Resetting(mid_stream=False) as up, gateway(config(up.url)) as server:
        response = post(server, {"model": "fast", "messages": MESSAGES})
        assert response.status_code in (502, 503)
        assert response.json()["error"]["type"] == "upstream_error"
        assert up.requests == 1
        assert post(server, {"model": "fast", "messages": MESSAGES}).status_code in (502, 503)


def test_connect_errors_are_retried() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway(config(dead, max_retries=2)) as server:
        assert post(server, {"model": "fast", "messages": MESSAGES}).status_code == 503
        metrics = httpx.get(f"{server.url}/metrics").text
        line = next(line for line in metrics.splitlines()
                    if line.startswith("gateway_upstream_errors_total") and 'reason="connect"' in line)
        assert line.endswith(" 3.0")  # the first try and two retries


def test_a_200_with_a_body_that_is_not_json_is_a_502_not_a_500() -> None:
    # An Anthropic client over an OpenAI upstream: the body must be translated, so it is parsed.
    with replica_over(Scripted(raw_body(b"<html>proxy error</html>"))) as (server, _):
        response = httpx.post(f"{server.url}/v1/messages", timeout=20,
                              json={"model": "fast", "max_tokens": 8, "messages": MESSAGES})
        assert response.status_code == 502, response.text
        assert response.json()["type"] == "error"


# --- After the first byte: the stream ends with an error event -----------------------------


def test_a_reset_mid_stream_ends_the_stream_with_an_error_event() -> None:
    with Resetting(mid_stream=True) as up, gateway(config(up.url)) as server, sdk(server) as client:
        stream = client.chat.completions.create(model="fast", messages=MESSAGES, stream=True)
        chunks = iter(stream)
        assert next(chunks).choices[0].delta.role == "assistant"
        assert next(chunks).choices[0].delta.content == WORDS[0]
        up.release.set()
        with pytest.raises(openai.APIError, match="upstream"):  # closed, or reset: either way
            next(chunks)
        stream.close()


def test_a_stall_mid_stream_ends_the_stream_with_an_error_event() -> None:
    with replica_over(Scripted(stall(sent=2)), read_timeout_ms=300) as (server, _):
        body = {"model": "fast", "messages": MESSAGES, "stream": True}
        response = post(server, body)
        assert response.status_code == 200
        received = events(response.content)
        assert received[1]["choices"][0]["delta"]["content"] == WORDS[0]
        assert received[-1]["error"]["type"] == "timeout_error"
        assert "[DONE]" not in received


def test_a_stall_mid_stream_ends_an_anthropic_stream_with_an_error_event() -> None:
    with replica_over(Scripted(stall(sent=2)), read_timeout_ms=300) as (server, _):
        body = {"model": "fast", "max_tokens": 8, "messages": MESSAGES, "stream": True}
        response = httpx.post(f"{server.url}/v1/messages", json=body, timeout=20)
        assert response.status_code == 200
        decoder = SSEDecoder()
        found = decoder.feed(response.content) + decoder.flush()
        assert found[0].event == "message_start"
        assert [e.event for e in found][-1] == "error"
        assert "message_stop" not in [e.event for e in found]


def test_a_stream_cut_short_without_done_is_not_passed_off_as_whole() -> None:
    with replica_over(Scripted(stall(sent=2, end=True))) as (server, _):
        response = post(server, {"model": "fast", "messages": MESSAGES, "stream": True})
        received = events(response.content)
        assert received[1]["choices"][0]["delta"]["content"] == WORDS[0]
        assert "error" in received[-1], received[-1]


def anthropic_cut_short() -> Step:
    """An Anthropic stream that ends cleanly after its first text, without `message_stop`."""

    async def step(payload: dict[str, Any], receive: Receive, send: Send) -> None:
        await start(send, 200, content_type=b"text/event-stream")
        events = [
            {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                  "content": [], "model": payload.get("model"),
                                                  "usage": {"input_tokens": 1, "output_tokens": 0}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "one"}},
        ]
        for event in events:
            data = b"event: %s\ndata: %s\n\n" % (event["type"].encode(), orjson.dumps(event))
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return step


def test_an_anthropic_stream_cut_short_is_not_passed_off_as_whole() -> None:
    upstream = Scripted(anthropic_cut_short())
    with serve(upstream) as up:
        cfg = config(up.url)
        cfg["model_providers"].append({"model": "anthropic/claude-x", "base_url": up.url})
        with gateway(cfg) as server:
            body = {"model": "claude-x", "max_tokens": 8, "messages": MESSAGES, "stream": True}
            response = httpx.post(f"{server.url}/v1/messages", json=body, timeout=20)
    decoder = SSEDecoder()
    names = [e.event for e in decoder.feed(response.content) + decoder.flush()]
    assert names[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert names[-1] == "error", names


# --- Fallbacks: a route's later models, for unpinned requests and first turns ----------------


def fallback_script() -> Scripted:
    # vllm/coder (the code route's first model) is down; openai/gpt-4o (its second) is up.
    return Scripted(ok(), by_model={"coder": [status(500, "coder is down")]})


def test_an_unpinned_request_falls_back_to_the_routes_next_model() -> None:
    with replica_over(fallback_script(), max_retries=1) as (server, up):
        with sdk(server) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": CODE}], stream=True
            )
            words = [c.choices[0].delta.content for c in raw.parse() if c.choices]
        assert raw.headers["x-gateway-model"] == "openai/gpt-4o"
        assert raw.headers["x-gateway-route"] == "code_generation"
        assert "".join(w or "" for w in words) == "".join(WORDS)
        assert (up.count("coder"), up.count("gpt-4o")) == (2, 1)


def test_a_first_turn_falls_back_and_its_pin_follows() -> None:
    with replica_over(fallback_script(), max_retries=1) as (server, up):
        body = {"model": "auto", "messages": [{"role": "user", "content": CODE}]}
        first = post(server, body, **{"X-Model-Affinity": "session-new"})
        assert first.status_code == 200
        assert (first.headers["x-gateway-model"], first.headers["x-gateway-rerouted-from"]) == (
            "openai/gpt-4o", "vllm/coder")
        second = post(server, body, **{"X-Model-Affinity": "session-new"})
        assert (second.headers["x-gateway-model"], second.headers["x-model-affinity-status"]) == (
            "openai/gpt-4o", "hit")
        assert (up.count("coder"), up.count("gpt-4o")) == (2, 2)


def test_a_pinned_request_does_not_fall_back() -> None:
    # The session is pinned to vllm/coder on a first turn it served; then coder goes down.
    script = Scripted(ok(), by_model={"coder": [ok(), status(500, "coder is down")]})
    with replica_over(script, max_retries=1) as (server, up):
        body = {"model": "auto", "messages": [{"role": "user", "content": CODE}]}
        assert post(server, body, **{"X-Model-Affinity": "session-pinned"}).status_code == 200
        response = post(server, body, **{"X-Model-Affinity": "session-pinned"})
        assert response.status_code == 502
        assert "coder is down" in response.json()["error"]["message"]
        assert response.headers["x-gateway-model"] == "vllm/coder"
        assert response.headers["x-model-affinity-status"] == "hit"
        assert (up.count("coder"), up.count("gpt-4o")) == (3, 0)
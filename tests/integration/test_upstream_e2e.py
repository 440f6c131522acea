"""The upstream client's duties end to end, through real replicas: hostile raw-socket providers
(endless bodies) against a gateway process whose memory is measured, exactly-once sends to a
provider that drops connections after reading the request, a provider holding its connection
cap while another serves, the provider's rate-limit signals reaching an OpenAI SDK client, and
a client that leaves ending the upstream wait."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.sse import SSEDecoder
from tests.integration.test_faults import MESSAGES, Scripted, hang, ok, replica_over, stall, status
from tests.support import Served, free_port, gateway, serve, wait_for

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any], int], Awaitable[bool]]
OK_BODY = orjson.dumps({"id": "c-1", "object": "chat.completion", "created": 1, "model": "m",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                     "finish_reason": "stop"}]})


class RawProvider:
    """A raw HTTP/1.1 provider on its own loop in a thread: reads each request whole, counts
    it, and lets `handle(reader, writer, payload, nth on this connection)` answer (False closes
    the connection)."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.port = free_port()
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nth = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                payload = orjson.loads(await reader.readexactly(length))
                self.requests += 1
                nth += 1
                if not await self.handle(reader, writer, payload, nth):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> RawProvider:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self._loop).result(timeout=5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


async def endless(writer: asyncio.StreamWriter, head: bytes, first: bytes = b"") -> bool:
    """A chunked body that never ends: `first`, then the same 64 KiB forever."""
    writer.write(head + b"transfer-encoding: chunked\r\n\r\n")
    if first:
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
    piece = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(piece), piece)
    while not writer.is_closing():
        writer.write(framed)
        await writer.drain()
    return False


MESSAGE_START = (b"event: message_start\ndata: " + orjson.dumps({"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "m",
    "usage": {"input_tokens": 1, "output_tokens": 0}}}) + b"\n\nevent: content_block_delta\ndata: ")


async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: dict[str, Any],
                  nth: int) -> bool:
    model = payload.get("model")
    if model == "endless-body":
        return await endless(writer, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
    if model == "endless-error":
        return await endless(writer, b"HTTP/1.1 500 Internal Server Error\r\n")
    # An Anthropic stream whose second event's one data line never ends.
    return await endless(writer, b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n",
                         first=MESSAGE_START)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """The highest RSS of a process, sampled every few milliseconds in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Served]]:
    started: list[Served] = []

    def run(config: dict[str, Any]) -> Served:
        started.append(Served(config, tmp_path))
        return started[-1]

    yield run
    for served in started:
        served.stop()


def test_endless_bodies_end_at_their_limits_and_the_gateway_stays_small(
    start: Callable[[dict[str, Any]], Served],
) -> None:
    with RawProvider(hostile) as provider:
        served = start({
            "model_providers": [
                {"model": "openai/endless-body", "base_url": provider.url, "default": True},
                {"model": "openai/endless-error", "base_url": provider.url},
                {"model": "anthropic/endless-line", "base_url": provider.url, "access_key": "k"},
            ],
            "upstream": {"max_retries": 0},
        })
        url = f"{served.url}/v1/chat/completions"
        httpx.get(f"{served.url}/healthz")
        idle = rss_mb(served.process.pid)
        with PeakRss(served.process.pid) as rss:
            for _ in range(3):
                whole = httpx.post(url, json={"model": "endless-body", "messages": MESSAGES}, timeout=60)
                assert whole.status_code == 502
                assert "upstream.max_response_bytes" in whole.json()["error"]["message"]
                error = httpx.post(url, json={"model": "endless-error", "messages": MESSAGES}, timeout=60)
                assert error.status_code == 502
                assert error.json()["error"]["message"] == (
                    "upstream openai/endless-error returned 500 with a non-JSON body")
                streamed = httpx.post(url, timeout=60, json={"model": "endless-line", "messages": MESSAGES,
                                                             "stream": True})
                assert streamed.status_code == 200
                decoder = SSEDecoder()
                events = [orjson.loads(e.data) for e in decoder.feed(streamed.content) + decoder.flush()]
                assert events[0]["choices"][0]["delta"]["role"] == "assistant"
                assert "upstream.max_sse_event_bytes" in events[-1]["error"]["message"]
        assert rss.peak - idle < 150, (idle, rss.peak)
        assert "Traceback" not in served.output()


def drops_every_second_request(delay: float) -> Handler:
    """Answers the first request on each connection; reads the second whole, then drops the
    connection `delay` s later without a word (the way a crashing provider might)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: dict[str, Any],
                     nth: int) -> bool:
        if nth == 2:
            await asyncio.sleep(delay)
            return False
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(OK_BODY), OK_BODY))
        await writer.drain()
        return True

    return handle


@pytest.mark.parametrize("retries", [0, 2])
def test_a_provider_that_drops_connections_after_reading_gets_each_request_once(retries: int) -> None:
    with RawProvider(drops_every_second_request(0.05)) as provider:
        config = {"model_providers": [{"model": "openai/m", "base_url": provider.url}],
                  "upstream": {"max_retries": retries, "retry_backoff_ms": 1}}
        with gateway(config) as replica:
            statuses = [httpx.post(f"{replica.url}/v1/chat/completions", timeout=20,
                                   json={"model": "m", "messages": MESSAGES}).status_code
                        for _ in range(20)]
        assert provider.requests == 20
        assert statuses.count(200) == 10 and statuses.count(502) == 10


def test_a_slow_provider_holding_its_cap_does_not_hold_up_another() -> None:
    slow = Scripted(stall(sent=2))
    with serve(slow) as slow_up, serve(Scripted(ok())) as healthy_up:
        config = {"model_providers": [
                      {"model": "openai/slow", "base_url": slow_up.url, "default": True},
                      {"model": "vllm/healthy", "base_url": healthy_up.url}],
                  "upstream": {"max_retries": 0, "max_connections": 2, "pool_timeout_ms": 500}}
        with gateway(config) as replica, httpx.Client(timeout=20) as client:
            url = f"{replica.url}/v1/chat/completions"
            body = {"model": "slow", "messages": MESSAGES, "stream": True}
            with client.stream("POST", url, json=body) as first, \
                    client.stream("POST", url, json=body) as second:
                assert (first.status_code, second.status_code) == (200, 200)  # the cap: both held
                served = client.post(url, json={"model": "healthy", "messages": MESSAGES})
                assert served.status_code == 200
                assert served.json()["choices"][0]["message"]["content"]
                waited = client.post(url, json={"model": "slow", "messages": MESSAGES})
                assert waited.status_code == 503
                assert waited.headers["retry-after"] == "1"
                assert "upstream.pool_timeout_ms" in waited.json()["error"]["message"]


RATE_LIMITED = {"retry-after": "30", "retry-after-ms": "30000", "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "30s", "x-unrelated": "kept back"}


def test_a_providers_rate_limit_signals_reach_an_openai_sdk_client() -> None:
    with replica_over(Scripted(status(429, "quota", RATE_LIMITED)), max_retries=2) as (server, up):
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client:
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(model="fast", messages=MESSAGES)
        headers = caught.value.response.headers
        assert headers["retry-after"] == "30" and headers["retry-after-ms"] == "30000"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"] == "30s"
        assert "x-unrelated" not in headers
        assert up.count() == 1  # 30 s is past what the gateway waits itself: the client decides


def test_retry_after_zero_still_backs_off() -> None:
    arrivals: list[float] = []

    def timed(step: Any) -> Any:
        async def run(payload: dict[str, Any], receive: Any, send: Any) -> None:
            arrivals.append(time.monotonic())
            await step(payload, receive, send)
        return run

    script = Scripted(timed(status(503, "busy", {"retry-after": "0"})), timed(ok()))
    with replica_over(script, max_retries=1, retry_backoff_ms=400) as (server, up):
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client:
            client.chat.completions.create(model="fast", messages=MESSAGES)
    assert up.count() == 2
    assert arrivals[1] - arrivals[0] >= 0.2  # the backoff's floor (400 ms, jittered by half at most)


def test_a_client_that_leaves_ends_the_upstream_wait_at_once() -> None:
    left = threading.Event()

    def noticing(step: Any) -> Any:
        async def run(payload: dict[str, Any], receive: Any, send: Any) -> None:
            await step(payload, receive, send)
            left.set()  # hang() returns when the gateway's side of the connection goes
        return run

    with replica_over(Scripted(noticing(hang())), first_byte_timeout_ms=60_000) as (server, up):
        body = orjson.dumps({"model": "fast", "messages": MESSAGES})
        with socket.create_connection(("127.0.0.1", server.port)) as conn:
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                         b"\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            wait_for(lambda: up.count() == 1, message="the request never reached the provider")
        wait_for(left.is_set, timeout=10, message="the upstream request outlived its client")
        metrics = httpx.get(f"{server.url}/metrics").text
        labels = 'endpoint="chat_completions",model="openai/gpt-4o-mini",status="499"'
        assert f"gateway_requests_total{{{labels}}}" in metrics

"""The simulator's ASGI app: routing, latency, failures, pacing and introspection.

Raw ASGI and orjson rather than Starlette requests because load tests put the simulator
under thousands of requests per second as every upstream of the gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.simulator import anthropic, openai
from gateway.simulator.agent import BadRequest, JsonObject, reply
from gateway.simulator.cache import PrefixCache
from gateway.simulator.responses import ResponsesApi
from gateway.simulator.wire import Api, StreamEvents

Headers = list[tuple[bytes, bytes]]

_LOG_SIZE = 200
_SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_MODELS = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "simulator"}
            for name in ("sim-small", "sim-large", "gpt-4o-mini", "claude-sonnet-4-20250514")
        ],
    }
)


@dataclass(frozen=True)
class SimulatorSettings:
    """How the fake provider behaves; every random choice comes from `seed`."""

    ttft_ms: float = 0.0  # time to first token; also the latency of non-streaming answers
    tokens_per_s: float = 0.0  # 0 = unlimited
    fail_rate: float = 0.0  # fraction of completions answered with fail_status
    fail_status: int = 500
    jitter_ms: float = 0.0  # uniform extra latency 0..jitter added to ttft
    seed: int = 0
    answer_tokens: int = 12  # length of plain answers (capped by max_tokens)

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tokens_per_s", "jitter_ms", "answer_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.fail_rate <= 1:
            raise ValueError(f"fail_rate: must be between 0 and 1, got {self.fail_rate}")
        if not 400 <= self.fail_status <= 599:
            raise ValueError(f"fail_status: must be a 4xx or 5xx status, got {self.fail_status}")


class Simulator:
    """A fake OpenAI + Anthropic provider. All state belongs to the instance."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._log: deque[JsonObject] = deque(maxlen=_LOG_SIZE)
        self._stats = dict.fromkeys(
            ("requests", "open_streams", "completed_streams", "cancelled_streams"), 0
        )
        self._cache = PrefixCache()
        self._responses = ResponsesApi()  # the responses it keeps, for previous_response_id
        self._apis: dict[str, Api] = {
            "/v1/chat/completions": openai.API,
            "/v1/messages": anthropic.API,
            "/v1/responses": self._responses.api(),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left before sending its request
        method, path = scope["method"], scope["path"]
        if path.startswith("/_simulator/"):
            await self._introspect(method, path, send)
            return
        try:
            parsed, valid = (orjson.loads(body), True) if body else (None, False)
        except orjson.JSONDecodeError:
            parsed, valid = None, False
        self._stats["requests"] += 1
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self._log.append({"method": method, "path": path, "headers": headers, "body": parsed})
        api = self._apis.get(path)
        if api is not None and method == "POST":
            await self._complete(api, body if valid else None, parsed, receive, send)
        elif api is not None:
            await _respond(send, 405, api.error(405, f"method {method} not allowed", None))
        elif path == "/v1/messages/count_tokens" and method == "POST":
            try:
                await _respond(send, 200, anthropic.count_tokens(parsed))
            except BadRequest as exc:
                await _respond(send, 400, anthropic.error(400, exc.message, exc.param))
        elif path.startswith("/v1/responses/") and method == "DELETE":
            response_id = path.removeprefix("/v1/responses/")
            if self._responses.delete(response_id):
                deleted = {"id": response_id, "object": "response.deleted", "deleted": True}
                await _respond(send, 200, orjson.dumps(deleted))
            else:
                await _respond(send, 404, openai.error(404, f"no response {response_id!r}", "response_id"))
        elif path == "/v1/models" and method == "GET":
            await _respond(send, 200, _MODELS)
        elif path == "/healthz" and method == "GET":
            await _respond(send, 200, b'{"status":"ok"}')
        else:
            await _respond(send, 404, openai.error(404, f"unknown path {method} {path}", None))

    async def _complete(
        self, api: Api, body: bytes | None, parsed: Any, receive: Receive, send: Send
    ) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        if body is None:
            await _respond(send, 400, api.error(400, "the request body is not valid JSON", None))
            return
        try:
            conversation = api.parse(parsed, hashlib.blake2b(body, digest_size=12).hexdigest())
        except BadRequest as exc:
            await _respond(send, 400, api.error(400, exc.message, exc.param))
            return
        settings = self.settings
        if settings.fail_rate and self._rng.random() < settings.fail_rate:
            status = settings.fail_status
            extra = [(b"retry-after", b"1")] if status == 429 else []
            await _respond(
                send, status, api.error(status, f"simulated failure {status}", None), extra
            )
            return
        jitter = self._rng.uniform(0, settings.jitter_ms) if settings.jitter_ms else 0.0
        first = start + (settings.ttft_ms + jitter) / 1000
        prompt = conversation.prompt if conversation.prompt is not None else parsed
        cached = self._cache.read(conversation.model, prompt, conversation.prompt_tokens)
        conversation = dataclasses.replace(conversation, cached_tokens=cached)
        answer = reply(conversation, settings.answer_tokens)
        created = int(time.time())
        if not conversation.stream:
            if first > loop.time():
                await asyncio.sleep(first - loop.time())
            await _respond(send, 200, api.render(conversation, answer, created))
            return
        step = 1 / settings.tokens_per_s if settings.tokens_per_s else 0.0
        await self._stream(
            send, receive, _schedule(api.stream(conversation, answer, created), first, step)
        )

    async def _stream(
        self, send: Send, receive: Receive, chunks: Iterable[tuple[float, bytes]]
    ) -> None:
        """Send each chunk at its deadline; stop early (and count it) if the client leaves."""
        self._stats["open_streams"] += 1
        client = _Client()
        watcher = asyncio.ensure_future(client.watch(receive))
        try:
            await self._send_chunks(send, client, chunks)
        except OSError:  # a server that reports the disconnect by failing the send
            client.gone = True
        except asyncio.CancelledError:  # the server is shutting down mid-stream
            client.gone = True
            raise
        finally:
            watcher.cancel()
            self._stats["open_streams"] -= 1
            self._stats["cancelled_streams" if client.gone else "completed_streams"] += 1

    async def _send_chunks(
        self, send: Send, client: _Client, chunks: Iterable[tuple[float, bytes]]
    ) -> None:
        started = False
        for deadline, data in chunks:
            await client.sleep_until(deadline)
            if client.gone:
                return
            if not started:
                await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
                started = True
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _introspect(self, method: str, path: str, send: Send) -> None:
        if path == "/_simulator/requests" and method == "GET":
            await _respond(send, 200, orjson.dumps(list(self._log)))
        elif path == "/_simulator/requests" and method == "DELETE":
            self._log.clear()
            await _respond(send, 200, b'{"cleared":true}')
        elif path == "/_simulator/stats" and method == "GET":
            await _respond(send, 200, orjson.dumps(self._stats))
        else:
            await _respond(send, 404, openai.error(404, f"unknown path {method} {path}", None))


class _Client:
    """The far end of one stream: lets paced sleeps end early when it disconnects."""

    __slots__ = ("_waiter", "gone")

    def __init__(self) -> None:
        self.gone = False
        self._waiter: asyncio.Future[None] | None = None

    async def watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._waiter is not None:
            _wake(self._waiter)

    async def sleep_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        delay = deadline - loop.time()
        if delay <= 0 or self.gone:
            return
        self._waiter = loop.create_future()
        timer = loop.call_later(delay, _wake, self._waiter)
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _schedule(events: StreamEvents, first: float, step: float) -> list[tuple[float, bytes]]:
    """Absolute deadlines (first + i * step), so pacing never drifts; equal ones share a send."""
    return [
        (first + offset, b"".join(data for _, data in group))
        for offset, group in itertools.groupby(events, key=lambda event: event[0] * step)
    ]


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, extra: Headers | None = None) -> None:
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_simulator_app(settings: SimulatorSettings) -> ASGIApp:
    return Simulator(settings)


def run_simulator(settings: SimulatorSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the simulator until interrupted (uvloop + httptools: it must be fast)."""
    uvicorn.run(
        create_simulator_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )

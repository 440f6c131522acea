"""The llm router against a fake OpenAI-compatible router model under real uvicorn: the request
it sends, every answer shape, failures falling back to builtin, the LRU, the prompt budget, and
one session through a real gateway replica asking the router model once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ModelProvider, RouterConfig, RoutingPreference, UpstreamConfig
from gateway.routing import BuiltinRouter, RouteChoice, Turn
from gateway.routing.llm import DecisionCache, LLMRouter
from gateway.routing.llm_prompt import (
    CHARS_PER_TOKEN,
    MAX_PROMPT_TOKENS,
    build_prompt,
    conversation_window,
)
from gateway.upstream import UpstreamClient
from tests.configs import CODE, REASON, three_models
from tests.support import ThreadServer, answer_lifespan, free_port, gateway, read_all, serve

SECRET = "sk-router-secret-7f3a"
PRIVATE = "my-private-words-in-the-conversation"
PREFERENCES = (
    RoutingPreference(
        "code_generation", "generating new code, writing functions, or creating boilerplate",
        (), ("vllm/coder",),
    ),
    RoutingPreference(  # a name with a space: matched exactly
        "complex reasoning", "complex reasoning tasks, multi-step analysis, or detailed explanations",
        (), ("openai/gpt-4o",),
    ),
)
# The builtin router sends this to code_generation, so a fallback is told from a model answer.
CODE_TURNS = [Turn("system", "You are helpful."), Turn("user", f"{CODE} {PRIVATE}")]
ANSWER = '{"route": "complex reasoning"}'


class FakeRouterModel:
    """A raw-ASGI chat completions endpoint: scripted answer, status or delay; counted calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.answer = ANSWER
            self.body: bytes | None = None  # a whole response body instead of a completion
            self.status = 200
            self.delay = 0.0
            self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    @property
    def calls(self) -> int:
        with self.lock:
            return len(self.requests)

    def prompt(self, index: int = -1) -> str:
        with self.lock:
            return str(self.requests[index][2]["messages"][0]["content"])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        raw = await read_all(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        with self.lock:
            self.requests.append((scope["path"], headers, orjson.loads(raw)))
            answer, body, status, delay = self.answer, self.body, self.status, self.delay
        if delay:
            try:  # a slow model; ends early when the gateway gives up and hangs up
                if (await asyncio.wait_for(receive(), delay))["type"] == "http.disconnect":
                    return
            except TimeoutError:
                pass
        if body is None:
            body = orjson.dumps({
                "id": "chatcmpl-router", "object": "chat.completion", "model": "arch-router",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer}}],
            })
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeRouterModel, ThreadServer]]:
    fake = FakeRouterModel()
    with serve(fake) as server:
        yield fake, server


@pytest.fixture
def fake(fake_server: tuple[FakeRouterModel, ThreadServer]) -> FakeRouterModel:
    fake_server[0].reset()
    return fake_server[0]


@pytest.fixture
def url(fake_server: tuple[FakeRouterModel, ThreadServer]) -> str:
    return fake_server[1].url


def router_for(url: str, timeout_ms: int = 5000, cache_entries: int = 1024) -> LLMRouter:
    """An LLMRouter for the fake; build it inside the event loop it will run on."""
    upstream = UpstreamClient(UpstreamConfig())
    provider = ModelProvider(
        "vllm/arch-router", "vllm", "arch-router", "openai", f"{url}/v1", access_key=SECRET
    )
    config = RouterConfig("llm", model=provider.model, timeout_ms=timeout_ms)
    return LLMRouter(
        PREFERENCES, provider, config, upstream, BuiltinRouter(PREFERENCES), cache_entries
    )


def choose(
    url: str, *conversations: list[Turn], timeout_ms: int = 5000, cache_entries: int = 1024
) -> list[RouteChoice]:
    """Each conversation through one LLMRouter (one cache), in order."""

    async def scenario() -> list[RouteChoice]:
        router = router_for(url, timeout_ms, cache_entries)
        await router.upstream.open()
        try:
            return [await router.choose(turns) for turns in conversations]
        finally:
            await router.close()
            await router.upstream.close()

    return list(asyncio.run(scenario()))


def conversation_of(prompt: str) -> list[dict[str, str]]:
    start = prompt.index("<conversation>\n") + len("<conversation>\n")
    return list(orjson.loads(prompt[start : prompt.index("\n</conversation>")]))


def test_sends_one_openai_request_in_the_arch_router_shape(fake: FakeRouterModel, url: str) -> None:
    turns = [
        Turn("system", "system text stays out"), Turn("user", "hello"),
        Turn("assistant", "hi, how can I help?"), Turn("tool", "tool output stays out"),
        Turn("assistant", ""), Turn("user", REASON),
    ]
    assert choose(url, turns) == [RouteChoice("complex reasoning", "router")]
    path, headers, body = fake.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert body["model"] == "arch-router"
    assert body["temperature"] == 0 and body["stream"] is False
    assert 0 < body["max_tokens"] <= 64
    assert [m["role"] for m in body["messages"]] == ["user"]
    prompt = fake.prompt()
    routes = orjson.dumps([{"name": p.name, "description": p.description} for p in PREFERENCES])
    assert f"<routes>\n{routes.decode()}\n</routes>" in prompt
    assert conversation_of(prompt) == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi, how can I help?"},
        {"role": "user", "content": REASON},
    ]
    assert '{"route": "other"}' in prompt


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"route": "code_generation"}', RouteChoice("code_generation")),
        ('```json\n{"route": "complex reasoning"}\n```', RouteChoice("complex reasoning")),
        ("```\n{'route': 'complex reasoning'}\n```", RouteChoice("complex reasoning")),
        ("{'route': 'complex reasoning'}", RouteChoice("complex reasoning")),
        ('Sure. The best fit is {"route": "complex reasoning"} as asked.',
         RouteChoice("complex reasoning")),
        ('{\n  "route": "complex reasoning"\n}\n', RouteChoice("complex reasoning")),
        ('<think>multi-step, so reasoning</think>{"route": "complex reasoning"}',
         RouteChoice("complex reasoning")),
        ('route: "complex reasoning"', RouteChoice("complex reasoning")),
        ("complex reasoning", RouteChoice("complex reasoning")),
        ('{"route": " complex reasoning "}', RouteChoice("complex reasoning")),
        ('{"route": "other"}', RouteChoice(None)),
        ('{"route": ""}', RouteChoice(None)),
        ('{"route": null}', RouteChoice(None)),
        ('{"route": "image_generation"}', RouteChoice(None)),  # unknown name: no route
        ('{"route": "Complex Reasoning"}', RouteChoice(None)),  # names match exactly
        ("", RouteChoice("code_generation", "fallback")),
        ("   \n", RouteChoice("code_generation", "fallback")),
        ("I am not sure which one to pick.", RouteChoice("code_generation", "fallback")),
        ('{"route": 3}', RouteChoice("code_generation", "fallback")),
        ('{"destination": "complex reasoning"}', RouteChoice("code_generation", "fallback")),
    ],
)
def test_answer_shapes(fake: FakeRouterModel, url: str, answer: str, expected: RouteChoice) -> None:
    fake.answer = answer
    assert choose(url, CODE_TURNS) == [expected]
    assert fake.calls == 1


@pytest.mark.parametrize(
    "body", [b"not json at all", b'{"choices": []}', b'{"choices": [{"message": {}}]}',
             b'{"choices": [{"message": {"content": null}}]}', b"[1, 2]"],
)
def test_bodies_that_are_not_completions_fall_back(
    fake: FakeRouterModel, url: str, body: bytes
) -> None:
    fake.body = body
    assert choose(url, CODE_TURNS) == [RouteChoice("code_generation", "fallback")]


@pytest.mark.parametrize("status", [500, 503, 429, 404])
def test_http_errors_fall_back_and_are_logged_without_secrets_or_text(
    fake: FakeRouterModel, url: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    fake.status = status
    with caplog.at_level(logging.WARNING, logger="gateway.routing.llm"):
        assert choose(url, CODE_TURNS) == [RouteChoice("code_generation", "fallback")]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    logged = caplog.text
    assert f"HTTP {status}" in logged and "vllm/arch-router" in logged
    assert SECRET not in logged and PRIVATE not in logged and "complex reasoning" not in logged


def test_an_unreachable_router_model_falls_back() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    assert choose(closed, CODE_TURNS) == [RouteChoice("code_generation", "fallback")]


def test_a_slow_router_model_falls_back_within_the_budget(
    fake: FakeRouterModel, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake.delay = 30.0
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="gateway.routing.llm"):
        assert choose(url, CODE_TURNS, timeout_ms=100) == [
            RouteChoice("code_generation", "fallback")
        ]
    assert time.monotonic() - started < 10 * 0.1 + 1.0  # event loop set-up included
    assert fake.calls == 1
    assert "no answer within 100 ms" in caplog.text


def test_lru_answers_identical_conversations_without_a_second_call(
    fake: FakeRouterModel, url: str
) -> None:
    other = [Turn("user", "Something else entirely")]
    choices = choose(url, CODE_TURNS, CODE_TURNS, other, CODE_TURNS)
    assert choices == [RouteChoice("complex reasoning")] * 4
    assert fake.calls == 2  # CODE_TURNS once, `other` once
    fake.reset()
    fake.answer = '{"route": "other"}'  # "no route" is a decision worth remembering too
    assert choose(url, CODE_TURNS, CODE_TURNS) == [RouteChoice(None)] * 2
    assert fake.calls == 1


def test_identical_requests_in_flight_together_share_one_call(
    fake: FakeRouterModel, url: str
) -> None:
    fake.delay = 0.3  # long enough for all of them to be waiting on the first

    async def scenario() -> list[RouteChoice]:
        router = router_for(url)
        await router.upstream.open()
        try:
            first = asyncio.ensure_future(router.choose(CODE_TURNS))
            deadline = time.monotonic() + 10
            while fake.calls == 0:  # until the question is out
                assert time.monotonic() < deadline, "the router model was never asked"
                await asyncio.sleep(0.005)
            others = [asyncio.ensure_future(router.choose(CODE_TURNS)) for _ in range(4)]
            first.cancel()  # the asking request goes away: the others still get the answer
            return list(await asyncio.gather(*others))
        finally:
            await router.close()
            await router.upstream.close()

    assert asyncio.run(scenario()) == [RouteChoice("complex reasoning")] * 4
    assert fake.calls == 1


def test_failures_are_not_remembered(fake: FakeRouterModel, url: str) -> None:
    fake.status = 500
    assert choose(url, CODE_TURNS, CODE_TURNS) == [RouteChoice("code_generation", "fallback")] * 2
    assert fake.calls == 2


def test_lru_keeps_the_most_recently_used() -> None:
    cache = DecisionCache(2)
    cache.put(b"a", "x")
    cache.put(b"b", None)
    assert cache.get(b"a") == (True, "x")  # now b is the least recently used
    cache.put(b"c", "z")
    assert (cache.get(b"b"), cache.get(b"a"), cache.get(b"c")) == (
        (False, None), (True, "x"), (True, "z")
    )
    assert len(cache) == 2


def test_lru_size_bounds_the_calls(fake: FakeRouterModel, url: str) -> None:
    first, second, third = ([Turn("user", f"question {n}")] for n in range(3))
    choose(url, first, second, third, first, cache_entries=2)
    assert fake.calls == 4  # `first` was evicted by `third`


def test_the_conversation_window_stays_under_budget_and_keeps_the_latest_user_message(
    fake: FakeRouterModel, url: str
) -> None:
    history = [Turn("user" if n % 2 == 0 else "assistant", f"turn {n} " + "x" * 1500)
               for n in range(40)]
    latest = "Now explain step by step why the migration failed."
    turns = [*history, Turn("user", latest), Turn("tool", "y" * 50_000),
             Turn("assistant", "z" * 50_000)]
    choose(url, turns)
    prompt = fake.prompt()
    assert len(prompt) / CHARS_PER_TOKEN <= MAX_PROMPT_TOKENS
    window = conversation_of(prompt)
    user_turns = [m["content"] for m in window if m["role"] == "user"]
    assert user_turns[-1] == latest
    # Newest first and contiguous: the window is the tail of the history (each clipped).
    kept = [m["content"].split(" ")[1] for m in window if m["content"].startswith("turn ")]
    assert kept == [str(n) for n in range(40 - len(kept), 40)] and len(kept) >= 2
    assert "y" * 100 not in prompt  # tool results never go to the router model


def test_a_huge_latest_user_message_is_clipped_but_kept_head_and_tail(
    fake: FakeRouterModel, url: str
) -> None:
    huge = "HEAD please refactor this " + "w" * 100_000 + " and write tests TAIL"
    choose(url, [Turn("user", "earlier " * 2000), Turn("assistant", "ok"), Turn("user", huge)])
    prompt = fake.prompt()
    assert len(prompt) / CHARS_PER_TOKEN <= MAX_PROMPT_TOKENS
    last = conversation_of(prompt)[-1]
    assert last["role"] == "user"
    assert last["content"].startswith("HEAD please") and last["content"].endswith("TAIL")


def test_a_reply_too_long_for_the_window_is_skipped_not_a_stop() -> None:
    turns = [Turn("user", "old question"), Turn("assistant", "old answer"),
             Turn("user", "latest question"), Turn("assistant", "r" * 5000)]
    window = conversation_window(turns, budget_chars=400)
    assert [m["content"] for m in window] == ["old question", "old answer", "latest question"]
    assert len(orjson.dumps(window)) <= 400
    tight = conversation_window(turns, budget_chars=10)  # the latest user message regardless
    assert tight == [{"role": "user", "content": "latest question"}]


def test_no_user_message_means_no_route_and_no_call(fake: FakeRouterModel, url: str) -> None:
    assert build_prompt("[]", [Turn("system", "only a system prompt")]) is None
    assert choose(url, [Turn("system", "only a system prompt")]) == [RouteChoice(None)]
    assert fake.calls == 0


# End to end: a real replica, the simulator serving, the fake as the router model.


def llm_config(upstream: str, router_url: str) -> dict[str, Any]:
    config = three_models(
        upstream, router={"type": "llm", "model": "vllm/arch-router", "timeout_ms": 300}
    )
    config["model_providers"].append(
        {"model": "vllm/arch-router", "base_url": f"{router_url}/v1", "access_key": SECRET}
    )
    return config


def test_a_pinned_session_asks_the_router_model_once(
    fake: FakeRouterModel, url: str, simulator: ThreadServer
) -> None:
    fake.answer = '{"route": "complex_reasoning"}'
    with gateway(llm_config(simulator.url, url)) as server, openai.OpenAI(
        base_url=f"{server.url}/v1", api_key="client-key", max_retries=0,
    ) as sdk:
        messages: list[dict[str, str]] = []
        for index, text in enumerate([CODE, "and now a haiku", REASON, "thanks"]):
            messages.append({"role": "user", "content": text})
            raw = sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=messages,  # type: ignore[arg-type]
                extra_headers={"X-Model-Affinity": "llm-session-1"},
            )
            reply = raw.parse().choices[0].message.content or ""
            messages.append({"role": "assistant", "content": reply})
            assert raw.headers["x-gateway-model"] == "openai/gpt-4o"
            assert raw.headers["x-gateway-route"] == "complex_reasoning"
            assert raw.headers["x-model-affinity-status"] == ("new" if index == 0 else "hit")
        assert fake.calls == 1
        assert fake.requests[0][2]["model"] == "arch-router"  # the provider's own model id

        fake.status = 500  # a failing router model: the builtin router decides, counted
        raw = sdk.chat.completions.with_raw_response.create(  # (CODE alone would hit the LRU)
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{CODE} in Go"}],
        )
        assert raw.headers["x-gateway-model"] == "vllm/coder"
        assert raw.headers["x-model-affinity-status"] == "none"
        assert fake.calls == 2
        metrics = httpx.get(f"{server.url}/metrics").text
    assert sample(metrics, "gateway_router_duration_seconds_count", router="llm") == 2
    assert sample(metrics, "gateway_routing_decisions_total", route="code_generation",
                  model="vllm/coder", source="fallback") == 1
    assert sample(metrics, "gateway_routing_decisions_total", route="complex_reasoning",
                  model="openai/gpt-4o", source="router") == 1
    assert SECRET not in metrics


def test_plano_llm_routing_model_override_selects_the_llm_router(
    fake: FakeRouterModel, url: str, simulator: ThreadServer
) -> None:
    config = three_models(simulator.url)
    config["model_providers"].append(  # Plano's local form: no /v1 in base_url
        {"model": "plano/Arch-Router", "base_url": url, "provider_interface": "openai"}
    )
    config["overrides"] = {"llm_routing_model": "plano/Arch-Router"}
    fake.answer = '{"route": "code_generation"}'
    with gateway(config) as server:
        response = httpx.post(f"{server.url}/routing/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}],
        })
    assert response.status_code == 200, response.text
    assert (response.json()["route"], response.json()["models"][0]) == (
        "code_generation", "vllm/coder"
    )
    assert [(path, body["model"]) for path, _, body in fake.requests] == [
        ("/v1/chat/completions", "Arch-Router")
    ]


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None

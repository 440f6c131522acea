"""The attempt loop against a scripted upstream (a real server on loopback) and the memory
store: fallback in rank order, a request the provider refuses is not tried elsewhere, the pin
follows a fallback on a first turn and is rerouted on a later one; errors the client sees."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gateway.affinity import Lookup, MemoryStore, Pin, pin_key
from gateway.apis import CHAT
from gateway.config import Config, ModelProvider, parse_config
from gateway.decider import Decider, Plan
from gateway.dispatch import Dispatcher, parse_retry_after, scrub, status_error
from gateway.errors import UpstreamError
from gateway.metrics import Metrics
from gateway.routing import BuiltinRouter, Decision
from gateway.sessions import Session
from gateway.upstream import UpstreamClient
from tests.configs import three_models
from tests.support import ThreadServer, read_all, serve

# The status each model's upstream answers, by the model id in the request body.
STATUSES = {"gpt-4o-mini": 200, "gpt-4o": 200, "coder": 200}


async def scripted(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    model = orjson.loads(await read_all(receive))["model"]
    status = STATUSES[model]
    body = b'{"choices": [], "model": "%s"}' % model.encode() if status == 200 else \
        b'{"error": {"message": "no: sk-abcdefghijkl"}}'
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    with serve(scripted) as server:
        yield server


@pytest.fixture(autouse=True)
def healthy() -> Iterator[None]:
    yield
    STATUSES.update(dict.fromkeys(STATUSES, 200))


def build(url: str, **routing: Any) -> tuple[Config, MemoryStore, Dispatcher]:
    config = parse_config(three_models(url, **routing), environ={})
    store = MemoryStore(600, 100, False)
    metrics = Metrics()
    decider = Decider(config, store, BuiltinRouter(config.preferences), metrics)
    return config, store, Dispatcher(config, UpstreamClient(config.upstream), decider, store, metrics)


def serve_plan(dispatcher: Dispatcher, plan: Plan) -> tuple[str, Plan]:
    request = CHAT.parse(b'{"messages": [{"role": "user", "content": "hi"}]}', 10)

    async def go() -> tuple[str, Plan]:
        await dispatcher.upstream.open()
        try:
            served, after = await dispatcher.run(request, plan, CHAT)
            served.response.close()
            return served.provider.model, after
        finally:
            await dispatcher.upstream.close()

    return asyncio.run(go())


def test_models_are_tried_in_rank_order_and_the_pin_follows_the_one_that_served(
    upstream: ThreadServer,
) -> None:
    _, store, dispatcher = build(upstream.url)
    key = pin_key("t", "s")
    asyncio.run(store.pin(key, Pin("vllm/coder", "code_generation")))
    STATUSES["coder"] = 503
    plan = Plan(Decision("code_generation", ("vllm/coder", "openai/gpt-4o"), "router"), "new", key,
                may_follow=True)
    model, after = serve_plan(dispatcher, plan)
    assert model == "openai/gpt-4o"
    assert (after.decision.models, after.rerouted_from) == (("openai/gpt-4o",), "vllm/coder")
    assert store.lookup(key) == Pin("openai/gpt-4o", "code_generation")


def test_without_a_session_a_fallback_serves_and_nothing_is_pinned(upstream: ThreadServer) -> None:
    _, store, dispatcher = build(upstream.url)
    STATUSES["coder"] = 500
    plan = Plan(Decision("code_generation", ("vllm/coder", "openai/gpt-4o"), "router"), "none")
    model, after = serve_plan(dispatcher, plan)
    assert (model, after) == ("openai/gpt-4o", plan)
    assert asyncio.run(store.count()) == 0


def test_a_request_the_provider_refuses_is_not_sent_to_the_next_model(upstream: ThreadServer) -> None:
    _, _, dispatcher = build(upstream.url)
    STATUSES["coder"] = 400
    plan = Plan(Decision("code_generation", ("vllm/coder", "openai/gpt-4o"), "router"), "none")
    with pytest.raises(UpstreamError) as caught:
        serve_plan(dispatcher, plan)
    assert caught.value.status == 400 and caught.value.request_at_fault


def test_a_failing_pinned_model_is_rerouted_when_the_config_says_so(upstream: ThreadServer) -> None:
    _, store, dispatcher = build(upstream.url, on_pinned_failure="reroute")
    key = pin_key("t", "s")
    asyncio.run(store.pin(key, Pin("vllm/coder", "code_generation")))
    STATUSES["coder"] = 503
    plan = Plan(Decision("code_generation", ("vllm/coder",), "affinity"), "hit", key, may_reroute=True)
    model, after = serve_plan(dispatcher, plan)
    assert model != "vllm/coder" and after.rerouted_from == "vllm/coder"
    assert store.lookup(key) == Pin(model, after.decision.route)


def test_a_reroute_that_lost_the_race_is_a_hit_on_the_pin_that_won(upstream: ThreadServer) -> None:
    """Another replica moved the pin first: this turn is served on its pin, which is a hit."""
    _, store, dispatcher = build(upstream.url, on_pinned_failure="reroute")
    key = pin_key("t", "s")
    asyncio.run(store.pin(key, Pin("openai/gpt-4o-mini", None)))  # where the other replica moved it
    STATUSES["coder"] = 503
    plan = Plan(Decision("code_generation", ("vllm/coder",), "affinity"), "hit", key, may_reroute=True)
    model, after = serve_plan(dispatcher, plan)
    assert (model, after.status) == ("openai/gpt-4o-mini", "hit")


def test_a_first_turn_that_lost_the_race_to_pin_is_decided_by_affinity(upstream: ThreadServer) -> None:
    """Two replicas pin a session's first turn at once: the loser serves the winner's pin, and its
    routing decision says so (the routing endpoint answered "pinned": false with status hit)."""
    _, store, dispatcher = build(upstream.url)
    key = pin_key("t", "race")
    asyncio.run(store.pin(key, Pin("openai/gpt-4o-mini", None)))  # the winner's
    real_get = store.get

    async def stale_get(key: str, session: str | None = None, *, touch: bool = True) -> Lookup:
        await real_get(key, session, touch=touch)
        return Lookup(None)  # read before the winner's pin landed

    store.get = stale_get  # type: ignore[method-assign]
    request = CHAT.parse(b'{"messages": [{"role": "user", "content": "write a function"}]}', 10)
    plan = asyncio.run(dispatcher.decider.plan(request, Session("race", "header", ""), "t"))
    assert (plan.status, plan.decision.models, plan.decision.source) == (
        "hit", ("openai/gpt-4o-mini",), "affinity")


def test_counting_tokens_leaves_a_pin_to_a_model_gone_from_the_config(upstream: ThreadServer) -> None:
    """A turn routes such a session afresh (and replaces the pin); a count changes nothing."""
    _, store, dispatcher = build(upstream.url)
    key = pin_key("t", "old")
    asyncio.run(store.pin(key, Pin("vllm/retired", None)))
    request = CHAT.parse(b'{"messages": [{"role": "user", "content": "hi"}]}', 10)
    plan = asyncio.run(dispatcher.decider.plan(request, Session("old", "header", ""), "t", pin=False))
    assert plan.status == "none" and store.lookup(key) == Pin("vllm/retired", None)


def test_without_reroute_a_failing_pinned_model_fails_the_turn(upstream: ThreadServer) -> None:
    _, store, dispatcher = build(upstream.url)
    key = pin_key("t", "s")
    asyncio.run(store.pin(key, Pin("vllm/coder", "code_generation")))
    STATUSES["coder"] = 503
    plan = Plan(Decision("code_generation", ("vllm/coder",), "affinity"), "hit", key)
    with pytest.raises(UpstreamError) as caught:
        serve_plan(dispatcher, plan)
    assert caught.value.status == 503
    assert store.lookup(key) == Pin("vllm/coder", "code_generation")


def test_a_request_cancelled_while_the_pin_follows_gives_its_connection_back(upstream: ThreadServer) -> None:
    """The fallback answered, and the client left while the store was moving the pin (a Redis
    round trip): the answer's connection must go back, or the origin loses a slot for good."""
    raw = three_models(upstream.url)
    raw["upstream"] = {"max_connections": 1, "pool_timeout_ms": 2000}
    config = parse_config(raw, environ={})
    store = MemoryStore(600, 100, False)
    metrics = Metrics()
    decider = Decider(config, store, BuiltinRouter(config.preferences), metrics)
    dispatcher = Dispatcher(config, UpstreamClient(config.upstream), decider, store, metrics)
    STATUSES["coder"] = 503
    moving = asyncio.Event()

    async def slow_repin(key: str, old: Pin, new: Pin, lane: Any = None) -> Any:
        moving.set()
        await asyncio.sleep(60)

    store.repin = slow_repin  # type: ignore[method-assign]
    request = CHAT.parse(b'{"messages": [{"role": "user", "content": "hi"}]}', 10)
    plan = Plan(Decision("code_generation", ("vllm/coder", "openai/gpt-4o"), "router"), "new",
                pin_key("t", "s"), may_follow=True)

    async def go() -> str:
        await dispatcher.upstream.open()
        try:
            task = asyncio.ensure_future(dispatcher.run(request, plan, CHAT))
            await asyncio.wait_for(moving.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # One connection per origin: this waits for the slot the cancelled request held.
            again = Plan(Decision("reasoning", ("openai/gpt-4o",), "router"), "none")
            served, _ = await dispatcher.run(request, again, CHAT)
            served.response.close()
            return served.provider.model
        finally:
            await dispatcher.upstream.close()

    assert asyncio.run(go()) == "openai/gpt-4o"


def provider(key: str | None = "sk-provider-secret-1") -> ModelProvider:
    return ModelProvider("openai/gpt-4o", "openai", "gpt-4o", "openai", "https://x/v1", key)


@pytest.mark.parametrize(
    ("status", "seen", "reason"),
    [(400, 400, "rejected"), (429, 429, "rate_limited"), (401, 502, "auth"), (403, 502, "auth"),
     (503, 503, "status_503"), (504, 504, "status_504"), (500, 502, "status_5xx"), (302, 502, "status_3xx")],
)
def test_provider_statuses_become_what_the_client_should_see(status: int, seen: int, reason: str) -> None:
    error = status_error(provider(), status, b'{"error": {"message": "nope"}}')
    assert (error.status, error.reason) == (seen, reason)
    assert error.message == f"upstream openai/gpt-4o returned {status}: nope"


@pytest.mark.parametrize(("body", "message"), [
    (b'{"error": "model not loaded"}', "model not loaded"),  # Ollama and some proxies
    (b'{"detail": "Not Found"}', "Not Found"),  # FastAPI servers
    (b'{"message": "bad input"}', "bad input"),
    (b"{}", "no message"),
    (b"", "no message"),
])
def test_the_message_of_an_error_in_the_shapes_compatible_servers_send(body: bytes, message: str) -> None:
    assert status_error(provider(), 400, body).message == f"upstream openai/gpt-4o returned 400: {message}"


def test_keys_never_reach_the_client() -> None:
    assert scrub("bad key sk-provider-secret-1 and sk-live-abcdefgh", "sk-provider-secret-1") == \
        "bad key *** and ***"


@pytest.mark.parametrize(("value", "seconds"), [(None, None), ("3", 3.0), ("0.5", 0.5), ("-2", 0.0),
                                                ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None)])
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds

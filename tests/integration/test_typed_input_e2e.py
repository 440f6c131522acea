"""Wrongly typed input, end to end: any JSON value in any field of a rich request of every
client API, sent to a real replica for a model of every provider kind (so same-API
pass-through and every translation), whole and streamed, is answered below 500, with no
error logged by the gateway or the simulator behind it.

`tests/unit/test_typed_input.py` holds the same property at the translators, with more
examples; this file proves nothing between the socket and the provider turns a 400 into a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.simulator import SimulatorSettings, create_simulator_app
from tests.support import gateway, serve
from tests.unit.test_fuzz import FUZZ
from tests.unit.test_typed_input import CHAT_REQUEST, MESSAGES_REQUEST, RESPONSES_REQUEST, mutations

# One model of each provider kind: OpenAI (Responses native), OpenAI-compatible (Responses
# translated to chat), Anthropic.
MODELS = ("gpt-4o-mini", "coder", "claude-sonnet-4")
ENDPOINTS = {
    "/v1/chat/completions": CHAT_REQUEST,
    "/v1/messages": MESSAGES_REQUEST,
    "/v1/messages/count_tokens": MESSAGES_REQUEST,
    "/v1/responses": RESPONSES_REQUEST,
    "/routing/v1/chat/completions": CHAT_REQUEST,
    "/routing/v1/messages": MESSAGES_REQUEST,
    "/routing/v1/responses": RESPONSES_REQUEST,
}


class Errors(logging.Handler):
    """Every ERROR record any logger writes (the gateway's 'unhandled error', uvicorn's
    'Exception in ASGI application' from the simulator)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[httpx.Client, Errors]]:
    errors = Errors()
    logging.getLogger().addHandler(errors)
    with serve(create_simulator_app(SimulatorSettings())) as simulator:
        config = {
            "model_providers": [
                {"model": "openai/gpt-4o-mini", "base_url": simulator.url, "access_key": "sk-o",
                 "default": True},
                {"model": "vllm/coder", "base_url": f"{simulator.url}/v1"},
                {"model": "anthropic/claude-sonnet-4", "base_url": simulator.url, "access_key": "sk-a"},
            ],
            "routing_preferences": [{"name": "code", "description": "writing code",
                                     "models": ["vllm/coder"]}],
            "routing": {"session_cache": {"type": "memory"}},
            "upstream": {"max_retries": 0},
        }
        with gateway(config) as replica, httpx.Client(base_url=replica.url, timeout=30) as client:
            yield client, errors
    logging.getLogger().removeHandler(errors)


def send(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    # The stdlib encoder: integers past 64 bits and deep nesting, as any client may send.
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def answered_below_500(stack: tuple[httpx.Client, Errors], path: str, body: Any) -> httpx.Response:
    client, errors = stack
    response = send(client, path, body)
    assert response.status_code < 500, (path, body, response.text)
    assert not errors.records, [errors.format(r) for r in errors.records]
    if response.status_code >= 400:
        error = response.json()
        assert "error" in error and "Traceback" not in response.text
    elif "text/event-stream" in response.headers.get("content-type", ""):
        # A stream that began with 200 must not end in the gateway's internal error.
        assert "internal gateway error" not in response.text, response.text
    return response


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("model", MODELS)
def test_the_rich_requests_are_served(stack: tuple[httpx.Client, Errors], path: str, model: str) -> None:
    """The mutations start from requests every provider serves (else they test little)."""
    body = dict(ENDPOINTS[path], model=model)
    if model != "claude-sonnet-4" and path.endswith("messages"):
        body["tools"] = body["tools"][:1]  # server tools: dropped for others, but counted
    for stream in (False, True) if "count_tokens" not in path else (False,):
        response = answered_below_500(stack, path, {**body, "stream": stream})
        assert response.status_code == 200, (model, path, stream, response.text)


def requests_for(template: dict[str, Any]) -> st.SearchStrategy[Any]:
    base = st.builds(lambda model, stream: {**template, "model": model, "stream": stream},
                     st.sampled_from(MODELS), st.booleans())
    return base.flatmap(mutations)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_any_value_in_any_field_is_answered_below_500(stack: tuple[httpx.Client, Errors], path: str) -> None:
    @settings(FUZZ, max_examples=120 if path.startswith("/v1/") else 40)
    @given(requests_for(ENDPOINTS[path]))
    def check(body: Any) -> None:
        answered_below_500(stack, path, body)

    check()
    assert stack[0].get("/healthz").status_code == 200


def test_count_tokens_asked_to_stream_answers_json(stack: tuple[httpx.Client, Errors]) -> None:
    """count_tokens has no stream: a client that sets it gets the count, as JSON."""
    for model in MODELS:
        body = {**MESSAGES_REQUEST, "tools": MESSAGES_REQUEST["tools"][:1], "model": model, "stream": True}
        response = answered_below_500(stack, "/v1/messages/count_tokens", body)
        assert response.status_code == 200 and response.json()["input_tokens"] > 0, (model, response.text)


def test_a_wrong_type_in_a_translated_request_is_a_400_naming_the_field(
    stack: tuple[httpx.Client, Errors]
) -> None:
    client, _ = stack
    cases = [
        ("/v1/chat/completions", "claude-sonnet-4", {"messages": [{"role": "assistant", "tool_calls": 5}]},
         "messages[0].tool_calls"),
        ("/v1/messages", "coder", {"stop_sequences": 5}, "stop_sequences"),
        ("/v1/messages", "coder", {"tools": 5}, "tools"),
        ("/v1/messages", "coder", {"tool_choice": {"type": {}}}, "tool_choice"),
    ]
    for path, model, change, param in cases:
        response = send(client, path, {**ENDPOINTS[path], "model": model, **change})
        assert response.status_code == 400, (path, change, response.text)
        error = response.json()["error"]
        assert param in (error.get("param") or error["message"]), (path, change, error)

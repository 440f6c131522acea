"""Both SDKs through the gateway to both kinds of provider, streaming and tools included."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.configs import CODE, REASON, three_models
from tests.support import ThreadServer, gateway

TOOL = {
    "name": "get_weather",
    "description": "weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris"]}},
                     "required": ["city"]},
}
OPENAI_TOOL: Any = {"type": "function", "function": {
    "name": TOOL["name"], "description": TOOL["description"], "parameters": TOOL["input_schema"]}}


def config(upstream: str, redis_url: str | None = None) -> dict[str, Any]:
    cache = {"type": "redis", "url": redis_url} if redis_url else {"type": "memory"}
    return {
        "model_providers": [
            {"model": "anthropic/claude-sonnet-4", "base_url": upstream, "access_key": "sk-ant-secret",
             "default": True},
            {"model": "openai/gpt-4o", "base_url": upstream, "access_key": "sk-oai-secret"},
        ],
        "routing_preferences": [
            {"name": "code_generation", "description": "generating new code, writing functions",
             "models": ["anthropic/claude-sonnet-4"]},
            {"name": "complex_reasoning", "description": "multi-step analysis, detailed explanations",
             "models": ["openai/gpt-4o"]},
        ],
        "routing": {"session_cache": cache},
    }


@pytest.fixture
def server(simulator: ThreadServer) -> Any:
    with gateway(config(simulator.url)) as replica:
        yield replica


def test_openai_client_to_anthropic_provider(server: ThreadServer, simulator: ThreadServer) -> None:
    httpx.delete(f"{simulator.url}/_simulator/requests")
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as sdk:
        reply = sdk.chat.completions.create(
            model="claude-sonnet-4", messages=[{"role": "system", "content": "be brief"},
                                               {"role": "user", "content": "hello"}])
        assert reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "stop"
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        called = sdk.chat.completions.create(
            model="claude-sonnet-4", messages=[{"role": "user", "content": "weather?"}],
            tools=[OPENAI_TOOL])
        call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert called.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather" and '"Paris"' in call.function.arguments
        chunks = list(sdk.chat.completions.create(
            model="claude-sonnet-4", messages=[{"role": "user", "content": "hello"}], stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply.choices[0].message.content
        assert chunks[-1].usage is not None
    upstream = httpx.get(f"{simulator.url}/_simulator/requests").json()
    assert {r["path"] for r in upstream} == {"/v1/messages"}
    assert all(r["headers"]["x-api-key"] == "sk-ant-secret" for r in upstream)
    assert upstream[0]["body"]["system"] == "be brief"


def test_anthropic_client_to_openai_provider(server: ThreadServer, simulator: ThreadServer) -> None:
    httpx.delete(f"{simulator.url}/_simulator/requests")
    with anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0) as sdk:
        message = sdk.messages.create(model="gpt-4o", max_tokens=64,
                                      messages=[{"role": "user", "content": "hello"}])
        assert message.content[0].type == "text" and message.stop_reason == "end_turn"
        tool_use = sdk.messages.create(model="gpt-4o", max_tokens=64, tools=[TOOL],  # type: ignore[list-item]
                                       messages=[{"role": "user", "content": "weather?"}])
        assert tool_use.stop_reason == "tool_use"
        block = tool_use.content[-1]
        assert block.type == "tool_use" and block.input == {"city": "Paris"}
        with sdk.messages.stream(model="gpt-4o", max_tokens=64,
                                 messages=[{"role": "user", "content": "hello"}]) as stream:
            streamed = stream.get_final_message()
        assert streamed.content[0].text == message.content[0].text  # type: ignore[union-attr]
        assert streamed.usage.output_tokens > 0
    upstream = httpx.get(f"{simulator.url}/_simulator/requests").json()
    assert {r["path"] for r in upstream} == {"/v1/chat/completions"}
    assert all(r["headers"]["authorization"] == "Bearer sk-oai-secret" for r in upstream)


def test_anthropic_client_to_anthropic_provider_passes_through(server: ThreadServer) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0) as sdk:
        with sdk.messages.stream(model="claude-sonnet-4", max_tokens=64, tools=[TOOL],  # type: ignore[list-item]
                                 messages=[{"role": "user", "content": "weather?"}]) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "tool_use" and final.model == "claude-sonnet-4"


def test_messages_errors_use_the_anthropic_shape(server: ThreadServer) -> None:
    response = httpx.post(f"{server.url}/v1/messages", content=b"{oops")
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    with anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0) as sdk:
        with pytest.raises(anthropic.NotFoundError):
            sdk.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])


def test_a_session_alternating_client_apis_keeps_one_pin(
    simulator: ThreadServer, redis_url: str
) -> None:
    cfg = config(simulator.url, redis_url)
    with gateway(cfg) as first, gateway(cfg) as second:
        headers = {"X-Model-Affinity": "mixed-session"}
        models = []
        with openai.OpenAI(base_url=f"{first.url}/v1", api_key="x", max_retries=0) as oai, \
                anthropic.Anthropic(base_url=second.url, api_key="x", max_retries=0) as ant:
            for index in range(6):
                text = CODE if index % 2 == 0 else REASON
                if index % 2 == 0:
                    raw = oai.chat.completions.with_raw_response.create(
                        model="auto", messages=[{"role": "user", "content": text}], extra_headers=headers)
                else:
                    raw = ant.messages.with_raw_response.create(  # type: ignore[assignment]
                        model="auto", max_tokens=16, messages=[{"role": "user", "content": text}],
                        extra_headers=headers)
                raw.parse()
                models.append(raw.headers["x-gateway-model"])
        assert models == ["anthropic/claude-sonnet-4"] * 6


def test_routing_decision_for_anthropic_requests_shares_the_pin(server: ThreadServer) -> None:
    url = f"{server.url}/routing/v1/messages"
    headers = {"X-Model-Affinity": "anthropic-decide"}
    code = {"max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "generating new code, writing functions"}]}]}
    first = httpx.post(url, json=code, headers=headers).json()
    assert (first["models"], first["route"], first["pinned"]) == (
        ["anthropic/claude-sonnet-4"], "code_generation", False)
    reasoning = {"max_tokens": 8, "messages": [{"role": "user", "content": REASON}]}
    assert httpx.post(url, json=reasoning).json()["models"] == ["openai/gpt-4o"]
    again = httpx.post(url, json=reasoning, headers=headers).json()
    assert (again["models"], again["pinned"]) == (["anthropic/claude-sonnet-4"], True)
    bad = httpx.post(url, json={"max_tokens": 8})
    assert bad.status_code == 400 and bad.json()["type"] == "error"


def test_a_harness_max_tokens_reaches_an_openai_model_within_its_cap_and_named_as_it_wants(
    simulator: ThreadServer,
) -> None:
    """Claude Code asks for 32,000 tokens: to a model with max_output_tokens 16,384 that is
    lowered (else a 400 on every turn), and OpenAI itself gets max_completion_tokens (its
    reasoning models refuse max_tokens), a compatible server max_tokens."""
    settings = three_models(simulator.url)
    settings["model_providers"][1]["max_output_tokens"] = 16384  # openai/gpt-4o
    settings["model_providers"][2]["max_output_tokens"] = 8192  # vllm/coder
    with gateway(settings) as replica:
        for model in ("openai/gpt-4o", "vllm/coder", "openai/gpt-4o-mini"):
            httpx.delete(f"{simulator.url}/_simulator/requests")
            asked = {"model": model, "max_tokens": 32_000, "messages": [{"role": "user", "content": "x"}]}
            assert httpx.post(f"{replica.url}/v1/messages", json=asked).status_code == 200
            sent = httpx.get(f"{simulator.url}/_simulator/requests").json()[-1]["body"]
            assert {k: v for k, v in sent.items() if k.startswith("max_")} == {
                "openai/gpt-4o": {"max_completion_tokens": 16384},
                "vllm/coder": {"max_tokens": 8192},
                "openai/gpt-4o-mini": {"max_completion_tokens": 32000},  # no cap configured
            }[model]
        # the same cap for every API: chat passed through, and Responses sent natively to OpenAI
        for path, field in (("/v1/chat/completions", "max_tokens"), ("/v1/responses", "max_output_tokens")):
            asked = {"model": "openai/gpt-4o", field: 32_000, "input": "x",
                     "messages": [{"role": "user", "content": "x"}]}
            asked.pop("input" if path == "/v1/chat/completions" else "messages")
            assert httpx.post(f"{replica.url}{path}", json=asked).status_code == 200
            assert httpx.get(f"{simulator.url}/_simulator/requests").json()[-1]["body"][field] == 16384

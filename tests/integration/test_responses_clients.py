"""/v1/responses with real clients and bad input: the openai-agents SDK runs a tool-using
agent to completion through the gateway; malformed requests are clear 4xx in the OpenAI
envelope and the next request still works; streamed events match the SDK's own types."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.sse import SSEDecoder
from tests.integration.test_responses_e2e import (
    ANTHROPIC,
    MODELS,
    NATIVE,
    TRANSLATED,
    WEATHER,
    clear,
    responses_config,
    upstream_requests,
)
from tests.support import ThreadServer, gateway

EVENTS = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def server(simulator: ThreadServer) -> Iterator[ThreadServer]:
    config = responses_config(simulator.url, None)
    config["limits"] = {"max_messages": 50, "max_body_bytes": 64 * 1024}
    with gateway(config) as replica:
        yield replica


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED, ANTHROPIC])
def test_openai_agents_sdk_runs_a_tool_agent_to_completion(server: ThreadServer, model: str) -> None:
    from agents import Agent, Runner, function_tool, set_tracing_disabled
    from agents.models.openai_responses import OpenAIResponsesModel
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"It is sunny in {city}."

    async def main() -> Any:
        client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        agent = Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather],
                      model=OpenAIResponsesModel(model=model, openai_client=client))
        try:
            return await Runner.run(agent, "What is the weather?", max_turns=5)
        finally:
            await client.close()

    result = asyncio.run(main())
    assert seen, "the agent never called its tool"
    assert "sunny in" in str(result.final_output)


@pytest.mark.parametrize("model", MODELS)
def test_streamed_events_match_the_sdk_types(server: ThreadServer, model: str) -> None:
    body = {"model": model, "input": "weather?", "tools": [WEATHER], "stream": True}
    raw = httpx.post(f"{server.url}/v1/responses", json=body, timeout=10)
    events = SSEDecoder().feed(raw.content)
    parsed = [EVENTS.validate_python(orjson.loads(e.data)) for e in events]
    kinds = [event.type for event in parsed]
    assert [e.event for e in events] == kinds  # the SSE event name is the type
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    assert kinds[-1] == "response.completed"
    assert [event.sequence_number for event in parsed] == list(range(len(parsed)))


BAD: list[tuple[Any, str]] = [
    ({"model": TRANSLATED}, "input"),
    ({"model": TRANSLATED, "input": 5}, "input"),
    ({"model": TRANSLATED, "input": [5]}, "input[0]"),
    ({"model": TRANSLATED, "input": [{"type": "banana"}]}, "input[0].type"),
    ({"model": TRANSLATED, "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"model": TRANSLATED, "input": [{"role": "wizard", "content": "hi"}]}, "input[0].role"),
    ({"model": TRANSLATED, "input": [{"role": "user", "content": 3}]}, "input[0].content"),
    ({"model": TRANSLATED, "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
     "input[0].content[0].text"),
    ({"model": TRANSLATED, "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
     "input[0].content[0].image_url"),
    ({"model": TRANSLATED, "input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
     "input[0].arguments"),
    ({"model": TRANSLATED, "input": [{"type": "function_call_output", "call_id": "c", "output": 1}]},
     "input[0].output"),
    ({"model": TRANSLATED, "input": "x", "instructions": 1}, "instructions"),
    ({"model": TRANSLATED, "input": "x", "temperature": "hot"}, "temperature"),
    ({"model": TRANSLATED, "input": "x", "temperature": 3}, "temperature"),
    ({"model": TRANSLATED, "input": "x", "top_p": 2}, "top_p"),
    ({"model": TRANSLATED, "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": TRANSLATED, "input": "x", "max_output_tokens": True}, "max_output_tokens"),
    ({"model": TRANSLATED, "input": "x", "metadata": []}, "metadata"),
    ({"model": TRANSLATED, "input": "x", "metadata": {"a": 1}}, "metadata.a"),
    ({"model": TRANSLATED, "input": "x", "store": "yes"}, "store"),
    ({"model": TRANSLATED, "input": "x", "stream": "yes"}, "stream"),
    ({"model": TRANSLATED, "input": "x", "parallel_tool_calls": 1}, "parallel_tool_calls"),
    ({"model": TRANSLATED, "input": "x", "previous_response_id": 7}, "previous_response_id"),
    ({"model": TRANSLATED, "input": "x", "prompt_cache_key": []}, "prompt_cache_key"),
    ({"model": TRANSLATED, "input": "x", "include": "all"}, "include"),
    ({"model": TRANSLATED, "input": "x", "reasoning": "high"}, "reasoning"),
    ({"model": TRANSLATED, "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"model": TRANSLATED, "input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}},
     "text.format.schema"),
    ({"model": TRANSLATED, "input": "x", "tools": {}}, "tools"),
    ({"model": TRANSLATED, "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"model": TRANSLATED, "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": TRANSLATED, "input": "x", "tool_choice": 3}, "tool_choice"),
    ({"model": 3, "input": "x"}, "model"),
    ({"model": TRANSLATED, "input": [{"role": "user", "content": "x"}] * 51}, "input"),
    ({"model": TRANSLATED, "input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    # Codex CLI's shapes, malformed: still a 400 naming the field.
    ({"model": TRANSLATED, "input": [{"type": "custom_tool_call", "call_id": "c", "name": "exec"}]},
     "input[0].input"),
    ({"model": TRANSLATED, "input": [{"type": "custom_tool_call_output", "output": "x"}]},
     "input[0].call_id"),
    ({"model": TRANSLATED, "input": [{"type": "additional_tools", "role": "developer"}]}, "input[0].tools"),
    ({"model": TRANSLATED, "input": [{"type": "additional_tools", "tools": [{"type": "custom"}]}]},
     "input[0].tools[0].name"),
    ({"model": TRANSLATED, "input": "x", "tools": [{"type": "namespace", "name": "n"}]}, "tools[0].tools"),
    ({"model": TRANSLATED, "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": [
        {"type": "namespace", "name": "m", "tools": []}]}]}, "tools[0].tools[0]"),
    ({"model": TRANSLATED, "input": "x", "tools": [{"type": "custom", "name": "e", "format": "lark"}]},
     "tools[0].format"),
]


@pytest.mark.parametrize(("body", "param"), BAD)
def test_bad_input_is_a_clear_400_naming_the_field(server: ThreadServer, body: Any, param: str) -> None:
    raw = httpx.post(f"{server.url}/v1/responses", json=body, timeout=10)
    assert raw.status_code == 400, raw.text
    error = raw.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert error["type"] == "invalid_request_error"
    ok = httpx.post(f"{server.url}/v1/responses", json={"model": TRANSLATED, "input": "hi"}, timeout=10)
    assert ok.status_code == 200


@pytest.mark.parametrize("model", [TRANSLATED, ANTHROPIC])
def test_hosted_tools_offered_to_a_translated_model_are_left_out_and_counted(
    server: ThreadServer, model: str
) -> None:
    """Codex CLI offers web_search on every request: a translated model serves it without."""
    def dropped() -> float:
        for line in httpx.get(f"{server.url}/metrics").text.splitlines():
            if line.startswith('gateway_translation_drops_total{api="responses",what="tool"}'):
                return float(line.split()[-1])
        return 0.0

    before = dropped()
    raw = httpx.post(f"{server.url}/v1/responses", json={
        "model": model, "input": "x",
        "tools": [WEATHER, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": []}]},
        timeout=10)
    assert raw.status_code == 200, raw.text
    assert dropped() == before + 2


@pytest.mark.parametrize("model", [TRANSLATED, ANTHROPIC])
def test_file_parts_translate_and_parts_with_no_place_are_counted(
    server: ThreadServer, simulator: ThreadServer, model: str
) -> None:
    """An input_file with inline data reaches a chat model as a `file` part and an Anthropic
    one as a `document`; one given only by URL has no place there: left out and counted."""
    def dropped() -> float:
        for line in httpx.get(f"{server.url}/metrics").text.splitlines():
            if line.startswith('gateway_translation_drops_total{api="responses",what="content_part"}'):
                return float(line.split()[-1])
        return 0.0

    pdf = "data:application/pdf;base64,JVBERi0xLjQ="
    before = dropped()
    clear(simulator)
    content = [{"type": "input_text", "text": "summarise"},
               {"type": "input_file", "file_data": pdf, "filename": "a.pdf"},
               {"type": "input_file", "file_url": "https://example.com/a.pdf"}]
    raw = httpx.post(f"{server.url}/v1/responses", json={
        "model": model, "input": [{"role": "user", "content": content}]}, timeout=10)
    assert raw.status_code == 200, raw.text
    assert dropped() == before + 1
    sent = upstream_requests(simulator)[-1]["body"]["messages"][-1]["content"]
    if model == TRANSLATED:
        assert sent[1] == {"type": "file", "file": {"file_data": pdf, "filename": "a.pdf"}}
    else:
        assert sent[1] == {"type": "document", "source": {
            "type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="}}
    assert len(sent) == 2


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", [TRANSLATED, ANTHROPIC])
def test_cached_prompt_tokens_of_a_translated_response_are_counted(
    server: ThreadServer, model: str, stream: bool
) -> None:
    """The provider's cache reads reach gateway_tokens_total whatever shape the client reads."""
    def cached() -> float:
        wanted = f'gateway_tokens_total{{kind="cached_prompt",model="{model}"}}'
        for line in httpx.get(f"{server.url}/metrics").text.splitlines():
            if line.startswith(wanted):
                return float(line.split()[-1])
        return 0.0

    before = cached()
    history: list[Any] = [{"role": "user", "content": f"a long shared prompt {model} {stream} " * 40}]
    for _ in range(2):
        raw = httpx.post(f"{server.url}/v1/responses", json={
            "model": model, "input": history, "store": False, "stream": stream}, timeout=10)
        assert raw.status_code == 200, raw.text
        history += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    assert cached() > before  # the second turn read the first one's prefix


def test_a_hosted_tool_forced_by_tool_choice_is_a_400_naming_it(server: ThreadServer) -> None:
    raw = httpx.post(f"{server.url}/v1/responses", json={
        "model": TRANSLATED, "input": "x", "tools": [WEATHER], "tool_choice": {"type": "web_search"}},
        timeout=10)
    assert raw.status_code == 400 and "'web_search'" in raw.json()["error"]["message"]
    assert raw.json()["error"]["param"] == "tool_choice"


@pytest.mark.parametrize(("body", "status"), [
    (b"{not json", 400),
    (b"[1, 2]", 400),
    (b'{"model": "vllm/coder", "input": "' + b"x" * 70_000 + b'"}', 413),
    (b'{"model": "no/such", "input": "x"}', 404),
    (b'{"model": "vllm/coder", "input": "x", "previous_response_id": "resp_unknown"}', 404),
])
def test_other_bad_requests(server: ThreadServer, body: bytes, status: int) -> None:
    raw = httpx.post(f"{server.url}/v1/responses", content=body, timeout=10,
                     headers={"content-type": "application/json"})
    assert raw.status_code == status, raw.text
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}


def test_routing_decision_and_stored_paths(server: ThreadServer) -> None:
    decision = httpx.post(f"{server.url}/routing/v1/responses", json={"model": ANTHROPIC, "input": "x"})
    assert decision.status_code == 200 and decision.json()["models"] == [ANTHROPIC]
    nope = "/v1/responses/resp_nope"
    for method, path, status in (("GET", nope, 404), ("DELETE", nope, 404),
                                 ("GET", f"{nope}/input_items", 404), ("DELETE", f"{nope}/input_items", 405)):
        raw = httpx.request(method, f"{server.url}{path}")
        assert raw.status_code == status and "error" in raw.json()
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'endpoint="responses"' in metrics
    assert 'gateway_requests_total{endpoint="stored_responses",model="",status="404"} 3.0' in metrics

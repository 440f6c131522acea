"""Model names and forward compatibility end to end (SPEC 5, 6, 7): wildcards, the unknown-
model policy, unknown fields, roles and blocks kept same-API and mapped or dropped across
APIs, count_tokens, HEAD /, and cached prompt tokens on /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ThreadServer, gateway


def config(upstream: str, **routing: Any) -> dict[str, Any]:
    return {
        "model_providers": [
            {"model": "anthropic/claude-sonnet-4", "base_url": upstream, "access_key": "sk-ant",
             "default": True},
            {"model": "openai/gpt-4o", "base_url": upstream, "access_key": "sk-oai"},
            {"model": "anthropic/*", "base_url": upstream, "access_key": "sk-ant"},
            {"model": "together_ai/*", "base_url": upstream, "access_key": "sk-tog"},
        ],
        "routing": {"session_cache": {"type": "memory"}, **routing},
    }


@pytest.fixture
def replica(simulator: ThreadServer) -> Iterator[ThreadServer]:
    with gateway(config(simulator.url)) as server:
        yield server


def upstream_requests(simulator: ThreadServer) -> list[dict[str, Any]]:
    return list(httpx.get(f"{simulator.url}/_simulator/requests").json())


def samples(replica: ThreadServer, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{replica.url}/metrics").text
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples if s.name == name}


def test_wildcards_pass_names_through_and_the_unknown_model_policy(
    replica: ThreadServer, simulator: ThreadServer
) -> None:
    with openai.OpenAI(base_url=f"{replica.url}/v1", api_key="x", max_retries=0) as sdk:
        for asked, model, model_id in (
            ("claude-opus-4-8", "anthropic/claude-opus-4-8", "claude-opus-4-8"),
            ("anthropic/claude-3-5-haiku-20241022", "anthropic/claude-3-5-haiku-20241022",
             "claude-3-5-haiku-20241022"),
            ("together_ai/openai/gpt-oss-20b", "together_ai/openai/gpt-oss-20b", "openai/gpt-oss-20b"),
        ):
            httpx.delete(f"{simulator.url}/_simulator/requests")
            raw = sdk.chat.completions.with_raw_response.create(
                model=asked, messages=[{"role": "user", "content": "hello"}])
            assert raw.headers["x-gateway-model"] == model
            assert upstream_requests(simulator)[0]["body"]["model"] == model_id
        with pytest.raises(openai.NotFoundError) as error:
            sdk.chat.completions.create(model="llama-9", messages=[{"role": "user", "content": "x"}])
        assert "llama-9" in str(error.value)
    listed = {m["id"]: m for m in httpx.get(f"{replica.url}/v1/models").json()["data"]}
    wildcard = listed["anthropic/*"]
    assert wildcard["wildcard"] is True and wildcard["model_prefixes"] == ["claude-"]
    assert "anthropic/claude-sonnet-4" in listed and "openai/gpt-4o" in listed
    with gateway(config(simulator.url, unknown_model="default")) as lenient, \
            anthropic.Anthropic(base_url=lenient.url, api_key="x", max_retries=0) as sdk2:
        raw2 = sdk2.messages.with_raw_response.create(
            model="llama-9", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        assert raw2.headers["x-gateway-model"] == "anthropic/claude-sonnet-4"


def test_same_api_requests_keep_what_the_gateway_does_not_know(
    replica: ThreadServer, simulator: ThreadServer
) -> None:
    httpx.delete(f"{simulator.url}/_simulator/requests")
    unknown = {"future_field": {"keep": [1, 2]},
               "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}}
    body = {
        "model": "claude-sonnet-4", "max_tokens": 16,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "future_block", "data": "z"}]},
            {"role": "system", "content": "newer clients put system turns here"},
            {"role": "user", "content": "go on"},
        ],
    }
    with anthropic.Anthropic(base_url=replica.url, api_key="x", max_retries=0) as sdk:
        sdk.messages.create(**body, extra_body=unknown, extra_headers={  # type: ignore[call-overload]
            "anthropic-beta": "context-management-2025-06-27", "anthropic-version": "2023-06-01"})
    sent = upstream_requests(simulator)[0]
    assert sent["body"] == {**body, **unknown}  # every field, role and block as the client sent them
    assert sent["headers"]["anthropic-beta"] == "context-management-2025-06-27"
    assert sent["headers"]["x-api-key"] == "sk-ant"
    httpx.delete(f"{simulator.url}/_simulator/requests")
    with openai.OpenAI(base_url=f"{replica.url}/v1", api_key="x", max_retries=0) as sdk2:
        sdk2.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
            extra_body={"verbosity": "low", "messages": [{"role": "critic", "content": "hm"},
                                                         {"role": "user", "content": "hi"}]},
            extra_headers={"OpenAI-Beta": "assistants=v2", "anthropic-beta": "not-for-openai"})
    sent = upstream_requests(simulator)[0]
    assert sent["body"]["verbosity"] == "low" and sent["body"]["messages"][0]["role"] == "critic"
    assert sent["headers"]["openai-beta"] == "assistants=v2" and "anthropic-beta" not in sent["headers"]


def test_translation_maps_what_it_can_and_counts_what_it_drops(
    replica: ThreadServer, simulator: ThreadServer
) -> None:
    httpx.delete(f"{simulator.url}/_simulator/requests")
    with anthropic.Anthropic(base_url=replica.url, api_key="x", max_retries=0) as sdk:
        reply = sdk.messages.create(
            model="gpt-4o", max_tokens=16,
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"},  # type: ignore[list-item]
                                                   {"type": "future_block", "data": "z"}]},
                      {"role": "system", "content": "be brief"},  # type: ignore[list-item, misc]
                      {"role": "critic", "content": "hm"}],  # type: ignore[list-item, misc]
            tools=[{"type": "web_search_20250305", "name": "web_search"},  # type: ignore[list-item]
                   {"name": "read", "input_schema": {"type": "object"}}])
        assert reply.content
    sent = upstream_requests(simulator)[0]["body"]
    assert sent["messages"] == [{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}]
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["read"]
    with openai.OpenAI(base_url=f"{replica.url}/v1", api_key="x", max_retries=0) as sdk2:
        sdk2.chat.completions.create(model="claude-sonnet-4", messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]},
            {"role": "critic", "content": "hm"}])  # type: ignore[list-item, misc]
    drops = samples(replica, "gateway_translation_drops_total")
    assert drops == {
        (("api", "messages"), ("what", "content_block")): 1.0, (("api", "messages"), ("what", "role")): 1.0,
        (("api", "messages"), ("what", "tool")): 1.0, (("api", "chat"), ("what", "content_part")): 1.0,
        (("api", "chat"), ("what", "role")): 1.0,
    }


def test_count_tokens_by_the_serving_model_or_an_estimate(
    replica: ThreadServer, simulator: ThreadServer
) -> None:
    httpx.delete(f"{simulator.url}/_simulator/requests")
    messages: Any = [{"role": "user", "content": "count these words please"}]
    with anthropic.Anthropic(base_url=replica.url, api_key="x", max_retries=0) as sdk:
        counted = sdk.messages.with_raw_response.count_tokens(
            model="claude-sonnet-4", messages=messages, extra_headers={"anthropic-beta": "b1"})
        assert counted.parse().input_tokens > 0
        assert "x-gateway-token-estimate" not in counted.headers
        assert counted.headers["x-gateway-model"] == "anthropic/claude-sonnet-4"
        sent = upstream_requests(simulator)
        assert [r["path"] for r in sent] == ["/v1/messages/count_tokens"]
        assert sent[0]["headers"]["anthropic-beta"] == "b1" and sent[0]["body"]["model"] == "claude-sonnet-4"
        estimated = sdk.messages.with_raw_response.count_tokens(
            model="gpt-4o", messages=messages,
            extra_headers={"X-Claude-Code-Session-Id": "never-pinned-by-counting"})
        assert estimated.headers["x-gateway-token-estimate"] == "chars/4"
        assert estimated.parse().input_tokens > 0
        assert len(upstream_requests(simulator)) == 1  # no provider call for the estimate
        assert estimated.headers["x-model-affinity-status"] == "none"
    counts = samples(replica, "gateway_requests_total")
    for model in ("anthropic/claude-sonnet-4", "openai/gpt-4o"):
        assert counts[(("endpoint", "count_tokens"), ("model", model), ("status", "200"))] == 1
    assert httpx.get(f"{replica.url}/v1/affinity/hs-x").status_code == 404


def test_head_root_answers(replica: ThreadServer) -> None:
    assert httpx.head(f"{replica.url}/").status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_cached_prompt_tokens_are_counted_and_fall_when_the_model_switches(
    simulator: ThreadServer, stream: bool
) -> None:
    with gateway(config(simulator.url)) as replica, \
            openai.OpenAI(base_url=f"{replica.url}/v1", api_key="x", max_retries=0) as sdk, \
            anthropic.Anthropic(base_url=replica.url, api_key="x", max_retries=0) as sdk2:
        tag = f"{stream}-conversation"
        history: Any = [{"role": "system", "content": f"a long shared system prompt {tag} " * 20},
                        {"role": "user", "content": "first"}]
        options: Any = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        for model in ("gpt-4o", "gpt-4o", "claude-sonnet-4"):  # the third turn switches model
            reply = sdk.chat.completions.create(model=model, messages=history, **options)
            list(reply) if stream else None  # type: ignore[func-returns-value]
            history = [*history, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
        switched = samples(replica, "gateway_tokens_total")
        # the switched turn found nothing of the conversation in the new model's cache
        assert switched[(("kind", "prompt"), ("model", "anthropic/claude-sonnet-4"))] > 0
        assert (("kind", "cached_prompt"), ("model", "anthropic/claude-sonnet-4")) not in switched
        anthropic_history: Any = [{"role": "user", "content": f"anthropic client {tag} " * 30}]
        for _ in range(2):
            if stream:
                with sdk2.messages.stream(model="claude-sonnet-4", max_tokens=8,
                                          messages=anthropic_history) as events:
                    events.get_final_message()
            else:
                sdk2.messages.create(model="claude-sonnet-4", max_tokens=8, messages=anthropic_history)
            anthropic_history = [*anthropic_history, {"role": "assistant", "content": "ok"},
                                 {"role": "user", "content": "more"}]
        tokens = samples(replica, "gateway_tokens_total")
    cached_gpt = tokens[(("kind", "cached_prompt"), ("model", "openai/gpt-4o"))]
    prompt_gpt = tokens[(("kind", "prompt"), ("model", "openai/gpt-4o"))]
    assert 0 < cached_gpt < prompt_gpt  # turn 2 read turn 1's prefix from gpt-4o's cache
    # the Anthropic client's own second turn read its first turn's prefix
    cached_claude = tokens[(("kind", "cached_prompt"), ("model", "anthropic/claude-sonnet-4"))]
    assert 0 < cached_claude < tokens[(("kind", "prompt"), ("model", "anthropic/claude-sonnet-4"))]

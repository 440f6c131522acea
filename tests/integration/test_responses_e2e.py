"""/v1/responses end to end: the official openai SDK through two gateway replicas sharing a
private Redis, against the simulator as an OpenAI-native provider, an OpenAI-compatible one
served by translation to Chat Completions, and an Anthropic one served through Messages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseItem
from pydantic import TypeAdapter

from tests.configs import CODE
from tests.support import RedisServer, ThreadServer, answer_lifespan, free_port, gateway, read_all, serve

NATIVE, TRANSLATED, ANTHROPIC = "openai/gpt-4o-mini", "vllm/coder", "anthropic/claude-sonnet-4"
MODELS = (NATIVE, TRANSLATED, ANTHROPIC)
UPSTREAM_PATHS = {NATIVE: "/v1/responses", TRANSLATED: "/v1/chat/completions", ANTHROPIC: "/v1/messages"}
WEATHER = {
    "type": "function", "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
                   "required": ["city"]},
}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
ITEMS = TypeAdapter(list[ResponseItem])


def responses_config(upstream: str, redis_url: str | None) -> dict[str, Any]:
    memory = {"type": "memory"}
    cache = {"type": "redis", "url": redis_url, "socket_timeout_ms": 2000} if redis_url else memory
    return {
        "version": "v0.4.0",
        "model_providers": [
            {"model": NATIVE, "base_url": upstream, "access_key": "sk-provider-secret-1", "default": True},
            {"model": TRANSLATED, "base_url": f"{upstream}/v1"},
            {"model": ANTHROPIC, "base_url": upstream, "access_key": "sk-ant-secret"},
        ],
        "routing": {"session_cache": cache},
        "upstream": {"max_retries": 0},
    }


@pytest.fixture
def replicas(simulator: ThreadServer, redis_url: str) -> Iterator[tuple[ThreadServer, ThreadServer]]:
    config = responses_config(simulator.url, redis_url)
    with gateway(config) as one, gateway(config) as two:
        yield one, two


def client(server: ThreadServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def upstream_requests(simulator: ThreadServer) -> list[dict[str, Any]]:
    return list(httpx.get(f"{simulator.url}/_simulator/requests").json())


def clear(simulator: ThreadServer) -> None:
    httpx.delete(f"{simulator.url}/_simulator/requests")


@pytest.mark.parametrize("model", MODELS)
def test_plain_response(
    replicas: tuple[ThreadServer, ThreadServer], simulator: ThreadServer, model: str
) -> None:
    clear(simulator)
    raw = client(replicas[0]).responses.with_raw_response.create(
        model=model, input="Say hello", instructions="Be brief", max_output_tokens=50, temperature=0.2,
        metadata={"purpose": "test"},
    )
    response = raw.parse()
    Response.model_validate(response.model_dump())
    assert response.status == "completed"
    assert response.output_text.startswith("This is a simulated answer")
    assert response.metadata == {"purpose": "test"}
    assert response.usage is not None and response.usage.output_tokens > 0
    assert raw.headers["x-gateway-model"] == model
    sent = upstream_requests(simulator)
    assert [r["path"] for r in sent] == [UPSTREAM_PATHS[model]]
    body = sent[0]["body"]
    if model == TRANSLATED:
        assert body["messages"][0] == {"role": "system", "content": "Be brief"}
        assert body["max_tokens"] == 50
    if model == ANTHROPIC:
        assert body["system"] == "Be brief" and body["max_tokens"] == 50


@pytest.mark.parametrize("model", MODELS)
def test_streaming_event_family(replicas: tuple[ThreadServer, ThreadServer], model: str) -> None:
    with client(replicas[1]).responses.stream(model=model, input="Say hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for expected in ("response.output_item.added", "response.content_part.added",
                     "response.output_text.delta", "response.output_text.done",
                     "response.content_part.done", "response.output_item.done"):
        assert expected in kinds, expected
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == deltas and deltas.startswith("This is a simulated answer")
    assert final.usage is not None and final.usage.output_tokens > 0


def run_tools(server_pick: list[openai.OpenAI], model: str, stream: bool) -> tuple[list[str], str, str]:
    """An agent loop over previous_response_id: each turn sends only the tool results, on the
    replica whose turn it is; returns the tools called, the final text and the last id."""
    called: list[str] = []
    previous: str | None = None
    new_input: Any = "What is the weather in Paris and Oslo?"
    for turn in range(6):
        api = server_pick[turn % len(server_pick)]
        kwargs: dict[str, Any] = {"model": model, "input": new_input, "tools": [WEATHER]}
        if previous is not None:
            kwargs["previous_response_id"] = previous
        if stream:
            with api.responses.stream(**kwargs) as events:
                response = events.get_final_response()
        else:
            response = api.responses.create(**kwargs)
        previous = response.id
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return called, response.output_text, response.id
        called += [f"{c.name}:{c.arguments}" for c in calls]
        new_input = [{"type": "function_call_output", "call_id": c.call_id, "output": f"sunny in turn {turn}"}
                     for c in calls]
    raise AssertionError("the agent never finished")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", MODELS)
def test_function_tools_over_a_chain_across_replicas(
    replicas: tuple[ThreadServer, ThreadServer], simulator: ThreadServer, model: str, stream: bool,
) -> None:
    clear(simulator)
    clients = [client(replicas[0]), client(replicas[1])]
    called, text, last_id = run_tools(clients, model, stream)
    assert called == ['get_weather:{"city":"Paris"}', 'get_weather:{"city":"Oslo"}']
    assert "sunny in turn 0" in text and "sunny in turn 1" in text
    sent = [r for r in upstream_requests(simulator) if r["path"] == UPSTREAM_PATHS[model]]
    assert len(sent) == 3
    last = sent[-1]["body"]
    if model == NATIVE:  # the provider holds the chain: the id goes back to it
        assert last["previous_response_id"] and len(last["input"]) == 1
    elif model == TRANSLATED:  # the gateway rebuilt the whole conversation from Redis
        roles = [m["role"] for m in last["messages"]]
        assert roles == ["user", "assistant", "tool", "assistant", "tool"]
    else:
        roles = [m["role"] for m in last["messages"]]
        assert roles == ["user", "assistant", "user", "assistant", "user"]
    # Stored: retrieve and list its input items on either replica.
    stored = clients[1].responses.retrieve(last_id)
    assert stored.id == last_id and stored.output_text == text
    items = clients[0].responses.input_items.list(last_id, order="asc")
    ITEMS.validate_python([item.model_dump() for item in items.data])
    kinds = [item.type for item in items.data]
    assert kinds[0] == "message" and kinds.count("function_call_output") == 2


@pytest.mark.parametrize("model", MODELS)
def test_input_items_of_plain_messages_are_the_sdks_items(
    replicas: tuple[ThreadServer, ThreadServer], model: str
) -> None:
    """Messages sent with their content as a string are listed as OpenAI lists them: parts."""
    response = client(replicas[0]).responses.create(model=model, input=[
        {"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}])
    raw = httpx.get(f"{replicas[1].url}/v1/responses/{response.id}/input_items", params={"order": "asc"})
    items = raw.json()["data"]
    ITEMS.validate_python(items)
    assert [item["content"][0]["type"] for item in items] == [
        "input_text", "input_text", "output_text", "input_text"]
    assert [item["content"][0]["text"] for item in items] == ["be brief", "hi", "hello", "again"]


@pytest.mark.parametrize("model", MODELS)
def test_follow_up_is_pinned_to_the_model_of_the_response_it_continues(
    replicas: tuple[ThreadServer, ThreadServer], model: str
) -> None:
    first = client(replicas[0]).responses.create(model=model, input="Remember the number 7")
    raw = httpx.post(f"{replicas[1].url}/v1/responses", json={
        "model": "auto", "input": "What was the number?", "previous_response_id": first.id})
    assert raw.status_code == 200, raw.text
    assert raw.headers["x-model-affinity-source"] == "previous-response"
    assert raw.headers["x-model-affinity-status"] == "hit"
    assert raw.headers["x-gateway-model"] == model


def test_a_chain_of_follow_ups_keeps_its_route_and_is_named_by_its_first_response(
    simulator: ThreadServer, redis_url: str
) -> None:
    config = responses_config(simulator.url, redis_url)
    config["routing_preferences"] = [{"name": "code_generation", "models": [TRANSLATED],
                                      "description": "generating new code, writing functions"}]
    with gateway(config) as one, gateway(config) as two:
        first = httpx.post(f"{one.url}/v1/responses", json={"model": "auto", "input": CODE})
        assert first.headers["x-gateway-route"] == "code_generation"
        previous = first.json()["id"]
        for server in (two, one):  # "and a test for it" alone would not route to code_generation
            raw = httpx.post(f"{server.url}/v1/responses", json={
                "model": "auto", "input": "hello", "previous_response_id": previous})
            assert raw.status_code == 200, raw.text
            assert (raw.headers["x-gateway-route"], raw.headers["x-gateway-model"]) == (
                "code_generation", TRANSLATED)
            previous = raw.json()["id"]
        decision = httpx.post(f"{two.url}/routing/v1/responses", json={
            "model": "auto", "input": "hello", "previous_response_id": previous}).json()
    assert decision["session_id"] == first.json()["id"]  # the conversation, at whichever turn
    assert decision["route"] == "code_generation"


def test_previous_response_ranked_before_prompt_cache_key_wins_over_it(
    simulator: ThreadServer, redis_url: str
) -> None:
    """`routing.session_sources` is an order: ranked first, the response a follow-up continues
    places it (before, previous-response was always tried last whatever the order said)."""
    config = responses_config(simulator.url, redis_url)
    config["routing"]["session_sources"] = ["previous-response", "prompt-cache-key"]
    with gateway(config) as server:
        first = client(server).responses.create(model=TRANSLATED, input="Remember 7")
        raw = httpx.post(f"{server.url}/v1/responses", json={
            "model": "auto", "input": "What was it?", "previous_response_id": first.id,
            "prompt_cache_key": "cache-1"})
    assert raw.headers["x-model-affinity-source"] == "previous-response"
    assert raw.headers["x-gateway-model"] == TRANSLATED


def test_a_follow_up_goes_back_to_a_model_a_wildcard_served(simulator: ThreadServer, redis_url: str) -> None:
    config = responses_config(simulator.url, redis_url)
    config["model_providers"].append({"model": "anthropic/*", "base_url": simulator.url, "access_key": "k"})
    with gateway(config) as server:
        first = client(server).responses.create(model="claude-opus-9-dated", input="Remember 7")
        raw = httpx.post(f"{server.url}/v1/responses", json={
            "model": "auto", "input": "What was it?", "previous_response_id": first.id})
    assert raw.status_code == 200, raw.text
    assert raw.headers["x-model-affinity-source"] == "previous-response"
    assert raw.headers["x-gateway-model"] == "anthropic/claude-opus-9-dated"


@pytest.mark.parametrize("model", MODELS)
def test_text_format_json_schema(replicas: tuple[ThreadServer, ThreadServer], simulator: ThreadServer,
                                 model: str) -> None:
    clear(simulator)
    response = client(replicas[0]).responses.create(
        model=model, input="Answer in JSON",
        text={"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}},
    )
    assert response.status == "completed"
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"
    body = upstream_requests(simulator)[0]["body"]
    if model == TRANSLATED:
        assert body["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": SCHEMA, "strict": True}}
    if model == ANTHROPIC:  # Anthropic's structured output
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    if model == NATIVE:
        assert body["text"]["format"]["name"] == "answer"


def test_delete_then_retrieve_and_follow_up_are_404(replicas: tuple[ThreadServer, ThreadServer]) -> None:
    one, two = client(replicas[0]), client(replicas[1])
    response = one.responses.create(model=TRANSLATED, input="hello")
    one.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        two.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        two.responses.create(model=TRANSLATED, input="again", previous_response_id=response.id)
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    assert two.responses.create(model=TRANSLATED, input="still fine").status == "completed"


def test_deleting_a_native_response_deletes_it_at_the_provider_first(
    replicas: tuple[ThreadServer, ThreadServer], simulator: ThreadServer
) -> None:
    one, two = client(replicas[0]), client(replicas[1])
    native = one.responses.create(model=NATIVE, input="hello")
    translated = one.responses.create(model=TRANSLATED, input="hello")
    clear(simulator)
    two.responses.delete(native.id)
    two.responses.delete(translated.id)  # the gateway's own: no provider holds it
    deletes = [r for r in upstream_requests(simulator) if r["method"] == "DELETE"]
    assert [r["path"] for r in deletes] == [f"/v1/responses/{native.id}"]
    assert deletes[0]["headers"]["authorization"] == "Bearer sk-provider-secret-1"
    for gone in (native.id, translated.id):
        with pytest.raises(openai.NotFoundError):
            one.responses.retrieve(gone)


def test_a_delete_the_provider_fails_keeps_the_gateways_copy(
    simulator: ThreadServer, redis_url: str
) -> None:
    """Nothing left behind at the provider: the gateway forgets a response only once its
    provider has; until then the delete fails clearly and can be retried."""
    config = responses_config(simulator.url, redis_url)
    with gateway(config) as server:
        response = client(server).responses.create(model=NATIVE, input="hello")
    unreachable = responses_config(f"http://127.0.0.1:{free_port()}", redis_url)
    with gateway(unreachable) as server:
        with pytest.raises(openai.APIStatusError) as failed:
            client(server).responses.delete(response.id)
        assert failed.value.status_code in (502, 503)
        assert "sk-provider" not in failed.value.response.text
        assert client(server).responses.retrieve(response.id).id == response.id
    with gateway(config) as server:
        client(server).responses.delete(response.id)
        with pytest.raises(openai.NotFoundError):
            client(server).responses.retrieve(response.id)


def test_a_provider_refusing_the_delete_keeps_the_copy_and_its_404_completes_it(
    simulator: ThreadServer, redis_url: str
) -> None:
    answers: list[int] = []  # the statuses the provider gives DELETEs, in turn

    async def provider(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        await read_all(receive)
        status = answers.pop(0)
        limited = [(b"retry-after", b"7")] if status == 429 else []
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *limited]})
        await send({"type": "http.response.body", "body": b'{"error": {"message": "no"}}'})

    config = responses_config(simulator.url, redis_url)
    with gateway(config) as server:
        response = client(server).responses.create(model=NATIVE, input="hello")
    with serve(provider) as refusing, gateway(responses_config(refusing.url, redis_url)) as server:
        answers.extend([500, 429, 404])
        with pytest.raises(openai.APIStatusError) as failed:
            client(server).responses.delete(response.id)
        assert failed.value.status_code == 502
        assert failed.value.body["code"] == "upstream_delete_failed"  # type: ignore[index]
        assert client(server).responses.retrieve(response.id).id == response.id
        with pytest.raises(openai.RateLimitError) as limited:  # the provider's wait, passed on
            client(server).responses.delete(response.id)
        assert limited.value.response.headers["retry-after"] == "7"
        assert client(server).responses.retrieve(response.id).id == response.id
        client(server).responses.delete(response.id)  # the provider has it no more: done
        with pytest.raises(openai.NotFoundError):
            client(server).responses.retrieve(response.id)
        assert answers == []


def test_store_false_is_not_kept(replicas: tuple[ThreadServer, ThreadServer]) -> None:
    api = client(replicas[0])
    response = api.responses.create(model=TRANSLATED, input="hello", store=False)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(response.id)


def test_another_tenants_response_is_not_found(simulator: ThreadServer, redis_url: str) -> None:
    config = responses_config(simulator.url, redis_url)
    config["auth"] = {"keys": [{"key": "key-a", "tenant": "a"}, {"key": "key-b", "tenant": "b"}]}
    with gateway(config) as server:
        a = openai.OpenAI(base_url=f"{server.url}/v1", api_key="key-a", max_retries=0)
        b = openai.OpenAI(base_url=f"{server.url}/v1", api_key="key-b", max_retries=0)
        response = a.responses.create(model=TRANSLATED, input="secret")
        assert a.responses.retrieve(response.id).id == response.id
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.create(model=TRANSLATED, input="x", previous_response_id=response.id)


def test_a_stored_response_survives_a_gateway_restart(simulator: ThreadServer, redis_url: str) -> None:
    config = responses_config(simulator.url, redis_url)
    with gateway(config) as server:
        response = client(server).responses.create(model=ANTHROPIC, input="Remember 7")
    with gateway(config) as restarted:
        again = client(restarted).responses.retrieve(response.id)
        follow = client(restarted).responses.create(
            model=ANTHROPIC, input="and?", previous_response_id=response.id)
    assert again.output_text == response.output_text
    assert follow.status == "completed"


def test_redis_down_fails_follow_ups_clearly_and_others_open(simulator: ThreadServer) -> None:
    redis = RedisServer().start()
    try:
        config = responses_config(simulator.url, redis.url)
        config["routing"]["session_cache"]["socket_timeout_ms"] = 200
        with gateway(config) as server:
            api = client(server)
            first = api.responses.create(model=TRANSLATED, input="hello")
            redis.kill()
            with pytest.raises(openai.APIStatusError) as caught:
                api.responses.create(model=TRANSLATED, input="more", previous_response_id=first.id)
            assert caught.value.status_code == 503
            assert caught.value.body["code"] == "response_store_unavailable"  # type: ignore[index]
            assert api.responses.create(model=TRANSLATED, input="fresh").status == "completed"
    finally:
        redis.stop()


def test_memory_store_chain(simulator: ThreadServer) -> None:
    with gateway(responses_config(simulator.url, None)) as server:
        called, text, _ = run_tools([client(server)], TRANSLATED, stream=True)
    assert len(called) == 2 and "sunny in turn 1" in text

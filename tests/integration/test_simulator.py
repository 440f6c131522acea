"""The simulator, driven over real HTTP by the official OpenAI and Anthropic SDKs."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest
import uvicorn

from gateway.simulator import SimulatorSettings, create_simulator_app
from gateway.simulator.agent import arguments
from tests.support import loopback_socket

TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "get_db_benchmarks": {
        "type": "object",
        "properties": {
            "database": {"type": "string", "enum": ["postgresql", "mongodb"]},
            "workload": {"type": "string", "enum": ["oltp", "analytics"]},
            "runs": {"type": "integer", "minimum": 3, "maximum": 10},
        },
        "required": ["database", "workload", "runs"],
    },
    "get_case_studies": {
        "type": "object",
        "properties": {
            "industry": {"type": "string", "minLength": 12},
            "limit": {"type": "integer", "default": 2},
            "verified": {"type": "boolean"},
        },
        "required": ["industry", "limit", "verified"],
    },
    "check_feature_support": {
        "type": "object",
        "properties": {"feature": {"type": "string", "enum": ["acid", "sharding", "joins"]}},
        "required": ["feature"],
    },
}
# one call per value of each tool's first enum parameter, in tool order
PLAN = [
    ("get_db_benchmarks", "postgresql"),
    ("get_db_benchmarks", "mongodb"),
    ("get_case_studies", None),
    ("check_feature_support", "acid"),
    ("check_feature_support", "sharding"),
    ("check_feature_support", "joins"),
]
OPENAI_TOOLS: Any = [
    {"type": "function", "function": {"name": n, "description": n, "parameters": s}}
    for n, s in TOOL_SCHEMAS.items()
]
ANTHROPIC_TOOLS: Any = [
    {"name": n, "description": n, "input_schema": s} for n, s in TOOL_SCHEMAS.items()
]
USER: Any = [{"role": "user", "content": "PostgreSQL or MongoDB for e-commerce?"}]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


@contextmanager
def serve(**settings: Any) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    sock = loopback_socket()
    app = create_simulator_app(SimulatorSettings(**settings))
    config = uvicorn.Config(app, lifespan="on", ws="none", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve() as base:
        yield base


def oai(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="sk-test", max_retries=0)


def ant(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key="sk-ant-test", max_retries=0)


def test_openai_plain_answer_echoes_model_with_usage(url: str) -> None:
    answer = oai(url).chat.completions.create(model="sim-a", messages=USER)
    assert answer.id.startswith("chatcmpl-") and answer.model == "sim-a"
    assert answer.choices[0].finish_reason == "stop"
    assert len((answer.choices[0].message.content or "").split()) == 12
    assert answer.usage is not None and answer.usage.completion_tokens == 12
    assert answer.usage.prompt_tokens == math.ceil(len(USER[0]["content"]) / 4)


def test_openai_stream_matches_plain_and_reports_usage(url: str) -> None:
    client = oai(url)
    plain = client.chat.completions.create(model="m", messages=USER, max_tokens=5)
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=USER,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
    assert "".join(d for d in deltas if d) == plain.choices[0].message.content
    assert sum(1 for d in deltas if d) == 5  # one token per chunk
    assert chunks[-2].choices[0].finish_reason == "length" == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_anthropic_plain_and_stream(url: str) -> None:
    client = ant(url)
    plain = client.messages.create(model="claude-x", max_tokens=100, messages=USER)
    assert plain.id.startswith("msg_") and plain.model == "claude-x"
    assert plain.stop_reason == "end_turn" and plain.usage.output_tokens == 12
    with client.messages.stream(model="claude-x", max_tokens=4, messages=USER) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) == 4 and final.stop_reason == "max_tokens"
    assert final.content[0].type == "text" and final.content[0].text == "".join(texts)
    # The same conversation again: the model's prompt cache holds it (all but the newest part).
    assert final.usage.output_tokens == 4 and final.usage.cache_read_input_tokens
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == plain.usage.input_tokens


def openai_turn(client: openai.OpenAI, messages: list[Any], stream: bool) -> dict[str, Any]:
    """One turn as an assistant message dict, assembled from chunks when streaming."""
    if not stream:
        answer = client.chat.completions.create(model="m", messages=messages, tools=OPENAI_TOOLS)
        return answer.choices[0].message.model_dump(exclude_none=True)
    message: dict[str, Any] = {"role": "assistant", "content": ""}
    calls: list[dict[str, Any]] = []
    chunks = client.chat.completions.create(
        model="m", messages=messages, tools=OPENAI_TOOLS, stream=True
    )
    argument_chunks = 0
    for chunk in chunks:
        delta = chunk.choices[0].delta
        message["content"] += delta.content or ""
        for call in delta.tool_calls or []:
            if call.id:
                calls.append({"id": call.id, "type": "function", "function": {"arguments": ""}})
                calls[-1]["function"]["name"] = call.function and call.function.name
            elif call.function and call.function.arguments:
                calls[-1]["function"]["arguments"] += call.function.arguments
                argument_chunks += 1
    if calls:
        assert argument_chunks >= 2  # arguments arrive split over several chunks
        message["tool_calls"] = calls
    return message


@pytest.mark.parametrize("stream", [False, True])
def test_openai_agent_loop_follows_the_enum_plan(url: str, stream: bool) -> None:
    client, messages, made = oai(url), list(USER), []
    for _ in range(len(PLAN) + 1):
        message = openai_turn(client, messages, stream)
        messages.append(message)
        if "tool_calls" not in message:
            break
        [call] = message["tool_calls"]
        assert call["id"].startswith("call_")
        name, args = call["function"]["name"], json.loads(call["function"]["arguments"])
        jsonschema.validate(args, TOOL_SCHEMAS[name])
        made.append((name, _enum_value(name, args)))
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": f"{name} ok"})
    assert made == PLAN
    text = messages[-1]["content"]
    assert text.startswith(f"Based on {len(PLAN)} tool results:")
    assert 'get_case_studies: "get_case_studies ok"' in text


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_agent_loop_follows_the_enum_plan(url: str, stream: bool) -> None:
    client, messages, made = ant(url), list(USER), []
    for _ in range(len(PLAN) + 1):
        request: Any = {"model": "m", "max_tokens": 200, "messages": messages}
        if stream:
            with client.messages.stream(**request, tools=ANTHROPIC_TOOLS) as events:
                answer = events.get_final_message()
        else:
            answer = client.messages.create(**request, tools=ANTHROPIC_TOOLS)
        messages.append({"role": "assistant", "content": [b.model_dump() for b in answer.content]})
        if answer.stop_reason != "tool_use":
            break
        [block] = answer.content
        assert block.type == "tool_use" and block.id.startswith("toolu_")
        jsonschema.validate(block.input, TOOL_SCHEMAS[block.name])
        made.append((block.name, _enum_value(block.name, dict(block.input))))
        result = {"type": "tool_result", "tool_use_id": block.id, "content": f"{block.name} ok"}
        messages.append({"role": "user", "content": [result]})
    assert made == PLAN
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"
    assert answer.content[0].text.startswith(f"Based on {len(PLAN)} tool results:")
    assert 'check_feature_support: "check_feature_support ok"' in answer.content[0].text


def _enum_value(name: str, args: dict[str, Any]) -> Any:
    first_enum = {"get_db_benchmarks": "database", "check_feature_support": "feature"}
    return args[first_enum[name]] if name in first_enum else None


def test_arguments_validate_against_awkward_schemas() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "when": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
            "score": {"type": ["number", "null"], "exclusiveMinimum": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "filter": {
                "type": "object",
                "properties": {"field": {"const": "price"}, "asc": {"type": "boolean"}},
                "required": ["field", "asc"],
            },
            "optional": {"type": "string"},
        },
        "required": ["when", "score", "tags", "filter"],
    }
    args = arguments(schema)
    jsonschema.validate(args, schema)
    assert "optional" not in args and args["filter"] == {"field": "price", "asc": True}


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": [1, 2], "required": "x"},
    {"type": "object", "properties": {"a": {"type": "array", "minItems": 10**12}}, "required": ["a"]},
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 10**12}}, "required": ["a"]},
    {"properties": "none", "required": [5, "b"]},
], ids=["properties a list", "huge minItems", "huge minLength", "properties a string"])
def test_arguments_for_schemas_a_model_cannot_read_are_small_and_never_raise(schema: Any) -> None:
    """The gateway passes schemas on as sent; the simulator, standing in for the provider,
    must answer them rather than fall over (which the gateway would report as a 502)."""
    assert len(json.dumps(arguments(schema))) < 1000


@pytest.mark.parametrize("status", [429, 500, 503])
def test_failures_raise_the_sdk_error_for_the_status(status: int) -> None:
    with serve(fail_rate=1.0, fail_status=status) as base:
        with pytest.raises(openai.APIStatusError) as openai_error:
            oai(base).chat.completions.create(model="m", messages=USER)
        with pytest.raises(anthropic.APIStatusError) as anthropic_error:
            ant(base).messages.create(model="m", max_tokens=10, messages=USER)
        raw = httpx.post(
            f"{base}/v1/messages", json={"model": "m", "max_tokens": 1, "messages": USER}
        )
    assert openai_error.value.status_code == anthropic_error.value.status_code == status
    if status == 429:
        assert isinstance(openai_error.value, openai.RateLimitError)
        assert isinstance(anthropic_error.value, anthropic.RateLimitError)
        assert raw.headers["retry-after"] == "1"
    else:
        assert isinstance(openai_error.value, openai.InternalServerError)
        assert isinstance(anthropic_error.value, anthropic.InternalServerError)
    body = openai_error.value.body  # the SDK unwraps the {"error": ...} envelope
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert raw.json()["type"] == "error" and set(raw.json()["error"]) == {"type", "message"}


def test_bad_requests_and_unknown_paths(url: str) -> None:
    bad = httpx.post(f"{url}/v1/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    missing = httpx.post(f"{url}/v1/messages", json={"model": "m", "messages": USER})
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    no_messages = httpx.post(f"{url}/v1/chat/completions", json={"model": "m"})
    assert no_messages.status_code == 400 and no_messages.json()["error"]["param"] == "messages"
    not_calls = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "assistant", "content": "x", "tool_calls": True}, *USER]})
    assert not_calls.status_code == 400  # as a provider would, not a crash
    assert not_calls.json()["error"]["message"] == "messages[0].tool_calls: an array is required"
    odd_ids = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": ["x"], "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": {"x": 1}, "content": "r"}, *USER]})
    assert odd_ids.status_code == 200  # ids that are not strings label nothing; no crash
    unknown = httpx.post(f"{url}/chat/completions", json={})
    assert unknown.status_code == 404 and "error" in unknown.json()
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/v1/models").json()["object"] == "list"


def test_same_seed_same_behaviour() -> None:
    def run() -> tuple[list[int], list[str]]:
        with serve(fail_rate=0.5, seed=7) as base, httpx.Client(base_url=base) as client:
            request = {"model": "m", "messages": USER, "tools": OPENAI_TOOLS}
            replies = [client.post("/v1/chat/completions", json=request) for _ in range(20)]
        bodies = [r.json() for r in replies if r.status_code == 200]
        for body in bodies:
            body.pop("created")
            body.pop("usage")  # from the second reply on, the prompt cache holds the prompt
        return [r.status_code for r in replies], [json.dumps(b) for b in bodies]

    statuses, bodies = run()
    assert {200, 500} == set(statuses)
    assert len(set(bodies)) == 1  # same input, same output
    assert run() == (statuses, bodies)


def test_stream_is_paced_against_deadlines() -> None:
    with serve(ttft_ms=50, tokens_per_s=100, answer_tokens=20) as base:
        start = time.monotonic()
        chunks = list(oai(base).chat.completions.create(model="m", messages=USER, stream=True))
        elapsed = time.monotonic() - start
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 20
    assert elapsed >= 0.05 + 19 / 100  # lower bound only: ttft, then 19 token gaps


def test_client_disconnect_counts_a_cancelled_stream() -> None:
    with serve(tokens_per_s=5, answer_tokens=100) as base, httpx.Client(base_url=base) as client:
        request = {"model": "m", "messages": USER, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=request) as response:
            chunks = response.iter_bytes()  # kept: a dropped iterator closes the response
            assert next(chunks).startswith(b"data: ")
            assert client.get("/_simulator/stats").json()["open_streams"] == 1

        def stats() -> Any:
            return client.get("/_simulator/stats").json()

        wait_for(lambda: stats()["cancelled_streams"] == 1)
        assert stats() == {
            "requests": 1,
            "open_streams": 0,
            "completed_streams": 0,
            "cancelled_streams": 1,
        }


def test_request_log_keeps_the_last_200(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        client.delete("/_simulator/requests")
        oai(url).with_options(default_headers={"X-Model-Affinity": "s1"}).chat.completions.create(
            model="m", messages=USER
        )
        [entry] = client.get("/_simulator/requests").json()
        assert entry["method"] == "POST" and entry["path"] == "/v1/chat/completions"
        assert entry["headers"]["x-model-affinity"] == "s1"
        assert entry["headers"]["authorization"] == "Bearer sk-test"
        assert entry["body"] == {"model": "m", "messages": USER}
        for i in range(205):
            client.get(f"/nothing/{i}")
        log = client.get("/_simulator/requests").json()
        assert len(log) == 200 and log[-1]["path"] == "/nothing/204" and log[0]["body"] is None
        assert client.delete("/_simulator/requests").status_code == 200
        assert client.get("/_simulator/requests").json() == []


@pytest.mark.parametrize(
    "bad", [{"fail_rate": 1.5}, {"ttft_ms": -1}, {"fail_status": 200}, {"tokens_per_s": -2}]
)
def test_settings_reject_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SimulatorSettings(**bad)


# --- the native Responses endpoint ------------------------------------------------------------

CUSTOM_EXEC = {"type": "custom", "name": "exec", "description": "run code"}


def test_identical_responses_requests_at_once_each_keep_their_own_request() -> None:
    """Each request travels with its conversation: the second of two identical requests in
    flight together still answers a custom tool's call as one (its shape comes from its body)."""
    body = {"model": "gpt-4o-mini", "input": "run it", "tools": [CUSTOM_EXEC], "store": False}
    with serve(ttft_ms=300) as base:  # both wait here at the same time
        results: list[Any] = [None, None]

        def call(index: int) -> None:
            results[index] = httpx.post(f"{base}/v1/responses", json=body, timeout=10).json()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert [r["output"][0]["type"] for r in results] == ["custom_tool_call", "custom_tool_call"]


def test_a_responses_conversation_reads_its_prefix_from_the_cache_and_can_be_deleted(url: str) -> None:
    first = httpx.post(f"{url}/v1/responses", json={
        "model": "gpt-4o-mini", "instructions": "be brief " * 50, "input": "first turn"}).json()
    again = httpx.post(f"{url}/v1/responses", json={
        "model": "gpt-4o-mini", "instructions": "be brief " * 50, "input": "second turn",
        "previous_response_id": first["id"]}).json()
    assert first["usage"]["input_tokens_details"]["cached_tokens"] == 0
    assert 0 < again["usage"]["input_tokens_details"]["cached_tokens"] < again["usage"]["input_tokens"]
    assert httpx.delete(f"{url}/v1/responses/{again['id']}").json()["deleted"] is True
    assert httpx.delete(f"{url}/v1/responses/{again['id']}").status_code == 404
    gone = httpx.post(f"{url}/v1/responses", json={
        "model": "gpt-4o-mini", "input": "third", "previous_response_id": again["id"]})
    assert gone.status_code == 400 and gone.json()["error"]["param"] == "previous_response_id"

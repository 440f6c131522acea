"""Wrongly typed input, at the translators: every client API's parser and every exchange's
request translator take any JSON value in any field of a rich request and answer a request
or a 400 naming the field; every response translator takes any JSON value in any field of a
provider's answer and answers the client's shape or raises what the pipeline answers with a
502. Never another exception (which
the pipeline would have to answer with a 500).

The requests start from one that uses every field each API has, so a mutation at any path
reaches the code that reads it; `tests/integration/test_typed_input_e2e.py` sends the same
mutations through a real replica to the simulator.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.apis import CHAT, COUNT_TOKENS, MESSAGES, ClientApi
from gateway.apis.base import UNREADABLE_ANSWER
from gateway.apis.responses import EXCHANGES as RESPONSES_EXCHANGES
from gateway.apis.responses import parse as parse_responses
from gateway.config import ModelProvider
from gateway.errors import BadRequest
from tests.unit.test_fuzz import FUZZ, json_value, mutate, paths

TARGET = ModelProvider("vllm/target-model", "vllm", "target-model", "openai", "http://127.0.0.1:1/v1")

IMAGE = "data:image/png;base64,iVBORw0KGgo="
PDF = "data:application/pdf;base64,JVBE"
CHAT_REQUEST: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "use tools"}]},
        {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                     {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
                                     {"type": "file", "file": {"file_data": PDF}}]},
        {"role": "assistant", "content": "calling", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It is sunny."}], "refusal": None},
    ],
    "tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "weather", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False, "stop": ["END"], "temperature": 0.5, "top_p": 0.9,
    "max_tokens": 64, "max_completion_tokens": 64, "n": 1, "stream": False,
    "stream_options": {"include_usage": True}, "user": "u-1", "seed": 1,
    "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
    "reasoning_effort": "low", "metadata": {"k": "v"},
}
MESSAGES_REQUEST: dict[str, Any] = {
    "model": "m",
    "max_tokens": 64,
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "weather?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": "JVBE"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "s"},
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "sunny"}], "is_error": False},
            {"type": "text", "text": "thanks"}]},
        {"role": "system", "content": "newer clients put system turns here"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "and tomorrow?"},
    ],
    "tools": [{"name": "get_weather", "description": "weather",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
              {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
    "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 5, "stream": False,
    "metadata": {"user_id": "{\"session_id\": \"s-1\"}"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
}
RESPONSES_REQUEST: dict[str, Any] = {
    "model": "m",
    "instructions": "be brief",
    "input": [
        {"role": "developer", "content": "use tools"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "weather?"},
            {"type": "input_image", "image_url": IMAGE, "detail": "auto"},
            {"type": "input_file", "file_data": PDF, "filename": "a.pdf"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}],
         "encrypted_content": "x"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": "{\"city\": \"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin"},
        {"type": "custom_tool_call_output", "call_id": "call_2", "output": [{"type": "input_text",
                                                                            "text": "done"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "sunny",
                                                              "annotations": []}]},
        {"role": "user", "content": "and tomorrow?"},
    ],
    "tools": [{"type": "function", "name": "get_weather", "description": "weather", "strict": True,
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
              {"type": "custom", "name": "apply_patch", "description": "patch",
               "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
              {"type": "namespace", "name": "clock", "tools": [{"type": "function", "name": "sleep",
                                                               "parameters": {"type": "object"}}]}],
    "tool_choice": {"type": "function", "name": "get_weather"},
    "parallel_tool_calls": False,
    "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}, "strict": True},
             "verbosity": "low"},
    "reasoning": {"effort": "low", "summary": "auto"},
    "max_output_tokens": 64, "temperature": 0.5, "top_p": 0.9, "metadata": {"k": "v"},
    "store": True, "prompt_cache_key": "pck-1", "include": ["reasoning.encrypted_content"],
    "stream": False, "truncation": "auto", "user": "u-1",
}

# What providers answer, for the response translators.
CHAT_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "calling", "refusal": None,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
              "prompt_tokens_details": {"cached_tokens": 1}},
}
MESSAGE_RESPONSE: dict[str, Any] = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
    "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 1,
              "cache_creation_input_tokens": 0},
}


def mutations(body: dict[str, Any]) -> st.SearchStrategy[Any]:
    """One or two fields of `body` given any JSON value (or taken away)."""
    one = st.tuples(st.sampled_from([(), *paths(body)]), json_value,
                    st.sampled_from(["replace", "replace", "delete", "unknown key"]))

    def apply(changes: list[tuple[tuple[Any, ...], Any, str]]) -> Any:
        data: Any = body
        for path, value, how in changes:
            if not isinstance(data, dict):
                break
            try:
                data = mutate(data, path, value, how)
            except (KeyError, IndexError, TypeError):
                pass  # the first change removed this path
        return data

    return st.lists(one, min_size=1, max_size=2).map(apply)


def request_or_400(api: ClientApi | None, body: Any) -> list[tuple[str, bytes]]:
    """Parse `body` as `api` (None: Responses) and translate it for every provider kind.
    Returns the translations made; anything but a 400 naming a field fails the test."""
    raw = json.dumps(body).encode()  # the stdlib: integers past 64 bits, as clients may send
    made = []
    try:
        request = parse_responses(raw, 100) if api is None else api.parse(raw, 100)
    except BadRequest as error:
        assert error.status == 400 and (error.param or error.code == "invalid_json"), error
        return []
    exchanges = RESPONSES_EXCHANGES if api is None else api.exchanges
    for kind, exchange in exchanges.items():
        try:
            made.append((kind, exchange.request_body(request, TARGET, [])))
        except BadRequest as error:
            assert error.status == 400 and error.param, (kind, error)
    return made


def test_the_rich_requests_translate_for_every_provider_kind() -> None:
    """The mutations start from requests every exchange takes whole (else they test little)."""
    assert [kind for kind, _ in request_or_400(CHAT, CHAT_REQUEST)] == ["openai", "anthropic"]
    messages = {**MESSAGES_REQUEST, "tools": MESSAGES_REQUEST["tools"][:1]}
    assert [kind for kind, _ in request_or_400(MESSAGES, messages)] == ["anthropic", "openai"]
    assert [kind for kind, _ in request_or_400(None, RESPONSES_REQUEST)] == ["native", "openai", "anthropic"]


@FUZZ
@given(mutations(CHAT_REQUEST))
@example({**CHAT_REQUEST, "messages": [{"role": "assistant", "tool_calls": 5}]})
@example({**CHAT_REQUEST, "messages": [{"role": "assistant", "content": [{"type": "text", "text": 5}]}]})
@example({**CHAT_REQUEST, "tool_choice": {"type": {}}})
def test_chat_requests_translate_or_are_a_400(body: Any) -> None:
    request_or_400(CHAT, body)


@FUZZ
@given(mutations(MESSAGES_REQUEST))
@example({**MESSAGES_REQUEST, "stop_sequences": 5})
@example({**MESSAGES_REQUEST, "tools": 5})
@example({**MESSAGES_REQUEST, "tool_choice": {"type": {}}})
def test_messages_requests_translate_or_are_a_400(body: Any) -> None:
    request_or_400(MESSAGES, body)
    request_or_400(COUNT_TOKENS, body)


@FUZZ
@given(mutations(RESPONSES_REQUEST))
def test_responses_requests_translate_or_are_a_400(body: Any) -> None:
    request_or_400(None, body)


def answers_or_502(api: ClientApi | None, request_body: dict[str, Any], kind: str, upstream: Any) -> None:
    raw = json.dumps(request_body).encode()
    request = parse_responses(raw, 100) if api is None else api.parse(raw, 100)
    exchange = (RESPONSES_EXCHANGES if api is None else api.exchanges)[kind]
    assert exchange.response_body is not None
    try:
        out = exchange.response_body(request, json.dumps(upstream).encode(), "m")
    except UNREADABLE_ANSWER:
        pass  # the pipeline's 502
    else:
        assert isinstance(orjson.loads(out), dict)


SIMPLE_RESPONSES = {"model": "m", "input": "hi"}
TRANSLATED_ANSWERS = [
    (CHAT, CHAT_REQUEST, "anthropic", MESSAGE_RESPONSE),
    (MESSAGES, MESSAGES_REQUEST, "openai", CHAT_RESPONSE),
    (None, SIMPLE_RESPONSES, "openai", CHAT_RESPONSE),
    (None, SIMPLE_RESPONSES, "anthropic", MESSAGE_RESPONSE),
]


@pytest.mark.parametrize(("api", "request_body", "kind", "answer"), TRANSLATED_ANSWERS,
                         ids=["chat<-messages", "messages<-chat", "responses<-chat", "responses<-messages"])
def test_provider_answers_translate_or_are_a_502(
    api: ClientApi | None, request_body: dict[str, Any], kind: str, answer: dict[str, Any]
) -> None:
    answers_or_502(api, request_body, kind, answer)  # the unmutated answer translates

    @FUZZ
    @given(mutations(answer))
    def check(upstream: Any) -> None:
        answers_or_502(api, request_body, kind, upstream)

    check()


def test_a_responses_request_refused_for_an_anthropic_model_names_the_clients_field() -> None:
    """Responses reach Anthropic through the chat shape in memory: its refusals must name what
    the client sent (`input`), not the chat fields made from it (`messages[2]...`)."""
    cases = [
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]},
         "input"),
    ]
    for change, param in cases:
        request = parse_responses(orjson.dumps({"model": "m", **change}), 100)
        with pytest.raises(BadRequest) as refused:
            RESPONSES_EXCHANGES["anthropic"].request_body(request, TARGET, [])
        assert refused.value.param == param, (change, refused.value.param, refused.value.message)

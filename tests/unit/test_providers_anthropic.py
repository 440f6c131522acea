"""Request, response and error translation between OpenAI Chat Completions and Anthropic Messages.

Every translated document is checked against the official SDKs' own types: requests with
pydantic over the SDKs' TypedDicts (and no key the SDK does not know), responses with the
SDKs' models in strict mode.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from typing import Any

import anthropic.types
import orjson
import pydantic
import pytest
from anthropic.types import message_create_params
from openai.types.chat import ChatCompletion, completion_create_params

from gateway.errors import BadRequest
from gateway.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    TranslationError,
    chat_to_messages_request,
    chat_to_messages_response,
    messages_to_chat_request,
    messages_to_chat_response,
)
from gateway.providers.anthropic_wire import anthropic_error_body, openai_error_message

_ANTHROPIC_REQUEST = pydantic.TypeAdapter(message_create_params.MessageCreateParamsNonStreaming)
_ANTHROPIC_STREAM_REQUEST = pydantic.TypeAdapter(message_create_params.MessageCreateParamsStreaming)
_CHAT_REQUEST = pydantic.TypeAdapter(completion_create_params.CompletionCreateParamsNonStreaming)
_CHAT_STREAM_REQUEST = pydantic.TypeAdapter(completion_create_params.CompletionCreateParamsStreaming)


def _drain(value: Any) -> Any:
    # pydantic validates TypedDict iterables lazily; walking them runs the validation.
    if isinstance(value, dict):
        return {k: _drain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [_drain(v) for v in value]
    return value


# The anthropic SDK (1.0 on) dropped these from its types; the API still takes them for
# models that support sampling.
_SAMPLING = ("temperature", "top_p")
_UNTYPED = (*_SAMPLING, "top_k")


def valid_anthropic_request(request: dict[str, Any]) -> dict[str, Any]:
    adapter = _ANTHROPIC_STREAM_REQUEST if request.get("stream") else _ANTHROPIC_REQUEST
    known = {k: v for k, v in request.items() if k not in _UNTYPED}
    # Equality proves no key was dropped as unknown to the SDK.
    assert _drain(adapter.validate_python(known)) == known
    assert all(0.0 <= request[k] <= 1.0 for k in _SAMPLING if k in request)
    return request


def valid_chat_request(request: dict[str, Any]) -> dict[str, Any]:
    adapter = _CHAT_STREAM_REQUEST if request.get("stream") else _CHAT_REQUEST
    assert _drain(adapter.validate_python(request)) == request
    return request


def valid_chat_response(response: dict[str, Any]) -> dict[str, Any]:
    ChatCompletion.model_validate(response, strict=False)
    assert orjson.loads(orjson.dumps(response)) == response
    return response


def valid_message(message: dict[str, Any]) -> dict[str, Any]:
    anthropic.types.Message.model_validate(message)
    return message


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ANTHROPIC_WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
}
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


# --- OpenAI request -> Anthropic request --------------------------------------------------

CHAT_TO_MESSAGES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "system and developer hoisted",
        {
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
                user("Hi"),
            ],
        },
        {
            "model": "claude-x",
            "system": "Be brief.\n\nUse metric.",
            "messages": [user("Hi")],
            "max_tokens": DEFAULT_MAX_TOKENS,
        },
    ),
    (
        "multi-part text and images",
        {
            "model": "claude",
            "messages": [
                user(
                    [
                        {"type": "text", "text": "What is in these?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG_B64}"},
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
                        },
                    ]
                )
            ],
        },
        {
            "model": "claude-x",
            "messages": [
                user(
                    [
                        {"type": "text", "text": "What is in these?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                        },
                    ]
                )
            ],
            "max_tokens": DEFAULT_MAX_TOKENS,
        },
    ),
    (
        "pdf file part",
        {
            "model": "claude",
            "messages": [
                user(
                    [
                        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
                        {"type": "text", "text": "Summarise"},
                    ]
                )
            ],
        },
        {
            "model": "claude-x",
            "messages": [
                user(
                    [
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBE",
                            },
                        },
                        {"type": "text", "text": "Summarise"},
                    ]
                )
            ],
            "max_tokens": DEFAULT_MAX_TOKENS,
        },
    ),
    (
        "tool conversation, consecutive tool results merged into one user turn",
        {
            "model": "claude",
            "messages": [
                user("Weather in Paris and Oslo?"),
                {
                    "role": "assistant",
                    "content": "Checking both.",
                    "tool_calls": [
                        call("call_1", "get_weather", '{"city": "Paris"}'),
                        call("call_2", "get_weather", '{"city":"Oslo"}'),
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "9C"}],
                },
                user("And tomorrow?"),
                {"role": "assistant", "content": None, "tool_calls": [call("c3", "get_weather", "")]},
                {"role": "tool", "tool_call_id": "c3", "content": "rain"},
            ],
            "tools": [WEATHER_TOOL],
        },
        {
            "model": "claude-x",
            "messages": [
                user("Weather in Paris and Oslo?"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking both."},
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "call_2",
                            "name": "get_weather",
                            "input": {"city": "Oslo"},
                        },
                    ],
                },
                user(
                    [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "9C"},
                        {"type": "text", "text": "And tomorrow?"},
                    ]
                ),
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "c3", "name": "get_weather", "input": {}}],
                },
                user([{"type": "tool_result", "tool_use_id": "c3", "content": "rain"}]),
            ],
            "max_tokens": DEFAULT_MAX_TOKENS,
            "tools": [ANTHROPIC_WEATHER_TOOL],
        },
    ),
    (
        "consecutive same-role turns merged, empty assistant dropped",
        {
            "model": "claude",
            "messages": [
                user("one"),
                user([{"type": "text", "text": "two"}, {"type": "text", "text": ""}]),
                {"role": "assistant", "content": ""},
                user("three"),
                {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                {"role": "assistant", "content": "done"},
            ],
        },
        {
            "model": "claude-x",
            "messages": [
                user(
                    [
                        {"type": "text", "text": "one"},
                        {"type": "text", "text": "two"},
                        {"type": "text", "text": "three"},
                    ]
                ),
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "done"}],
                },
            ],
            "max_tokens": DEFAULT_MAX_TOKENS,
        },
    ),
    (
        "sampling and limits",
        {
            "model": "claude",
            "messages": [user("Hi")],
            "max_tokens": 50,
            "max_completion_tokens": 70,
            "stop": "END",
            "temperature": 1.7,
            "top_p": 0.9,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "user-42",
            "n": 1,
        },
        {
            "model": "claude-x",
            "messages": [user("Hi")],
            "max_tokens": 70,
            "stop_sequences": ["END"],
            "temperature": 1.0,
            "stream": True,
            "metadata": {"user_id": "user-42"},
        },
    ),
    (
        "stop list, max_tokens, negative temperature",
        {
            "model": "claude",
            "messages": [user("Hi")],
            "max_tokens": 12,
            "stop": ["a", "b"],
            "temperature": -1,
            "stream": False,
        },
        {
            "model": "claude-x",
            "messages": [user("Hi")],
            "max_tokens": 12,
            "stop_sequences": ["a", "b"],
            "temperature": 0.0,
        },
    ),
]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"temperature": 0.2, "top_p": 0.5}, {"temperature": 0.2}),
        ({"top_p": 0.5}, {"top_p": 0.5}),
        ({"temperature": 2}, {"temperature": 1.0}),
        ({"temperature": None, "top_p": None}, {}),
    ],
)
def test_sampling_parameters(params: dict[str, Any], expected: dict[str, Any]) -> None:
    out = chat_to_messages_request({"messages": [user("Hi")], **params}, "c")
    assert {k: out[k] for k in _SAMPLING if k in out} == expected
    valid_anthropic_request(out)


def test_sampling_parameters_can_be_dropped_for_models_that_refuse_them() -> None:
    chat = {"messages": [user("Hi")], "temperature": 0.7, "top_p": 0.9}
    out = valid_anthropic_request(chat_to_messages_request(chat, "c", sampling=False))
    assert not set(_SAMPLING) & out.keys()


@pytest.mark.parametrize(
    ("chat", "expected"), [c[1:] for c in CHAT_TO_MESSAGES], ids=[c[0] for c in CHAT_TO_MESSAGES]
)
def test_chat_to_messages_request(chat: dict[str, Any], expected: dict[str, Any]) -> None:
    original = copy.deepcopy(chat)
    assert valid_anthropic_request(chat_to_messages_request(chat, "claude-x")) == expected
    assert chat == original  # the client's request is not mutated


SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
          "additionalProperties": False}


def test_a_json_schema_is_structured_output_both_ways() -> None:
    """OpenAI's strict JSON schema and Anthropic's `output_config.format` are one feature, with
    the same schema rules; `json_object` has no Anthropic equivalent and is left out, counted."""
    chat = {"model": "m", "messages": [user("Hi")], "response_format": {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}}
    drops: list[str] = []
    anthropic_request = valid_anthropic_request(chat_to_messages_request(chat, "claude-x", drops=drops))
    assert anthropic_request["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    back = valid_chat_request(messages_to_chat_request(anthropic_request, "gpt-x"))
    assert back["response_format"]["json_schema"]["schema"] == SCHEMA
    assert back["response_format"]["json_schema"]["strict"] is True
    loose = {**chat, "response_format": {"type": "json_object"}}
    assert "output_config" not in chat_to_messages_request(loose, "claude-x", drops=drops)
    assert drops == ["response_format"]
    with pytest.raises(BadRequest, match="response_format"):  # no list to count it in: refused
        chat_to_messages_request(loose, "claude-x")


def test_a_call_cut_short_earlier_in_the_session_is_kept_not_refused() -> None:
    """One session can move between providers: a call a model left unfinished (max tokens)
    stays in the history, as an answer's is kept; a 400 here failed every later turn."""
    cut = {"role": "assistant", "tool_calls": [call("a", "f", "{oops")]}
    result = {"role": "tool", "tool_call_id": "a", "content": "cut"}
    chat = {"model": "m", "messages": [user("go"), cut, result]}
    request = valid_anthropic_request(chat_to_messages_request(chat, "claude-x"))
    assert request["messages"][1]["content"][0]["input"] == {"_raw_arguments": "{oops"}


TOOL_CHOICES: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
    ({}, None),
    ({"tool_choice": "auto"}, {"type": "auto"}),
    ({"tool_choice": "none"}, {"type": "none"}),
    ({"tool_choice": "required"}, {"type": "any"}),
    (
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"type": "tool", "name": "get_weather"},
    ),
    ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
    (
        {"tool_choice": "required", "parallel_tool_calls": False},
        {"type": "any", "disable_parallel_tool_use": True},
    ),
    (
        {
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
        },
        {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    ),
    ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
    ({"parallel_tool_calls": True}, None),
]


@pytest.mark.parametrize(("extra", "expected"), TOOL_CHOICES)
def test_tool_choice(extra: dict[str, Any], expected: dict[str, Any] | None) -> None:
    chat = {"model": "m", "messages": [user("Hi")], "tools": [WEATHER_TOOL], **extra}
    out = valid_anthropic_request(chat_to_messages_request(chat, "c"))
    assert out["tools"] == [ANTHROPIC_WEATHER_TOOL]
    assert out.get("tool_choice") == expected


def test_tool_without_parameters_or_description() -> None:
    chat = {
        "model": "m",
        "messages": [user("Hi")],
        "tools": [{"type": "function", "function": {"name": "now"}}],
        "tool_choice": "auto",
    }
    out = valid_anthropic_request(chat_to_messages_request(chat, "c"))
    assert out["tools"] == [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        (" ", None),
        ([], None),
        (["", "  "], None),
        (["\n\n", ""], None),
        (["\nEND", " "], ["\nEND"]),
        ("x", ["x"]),
    ],
)
def test_blank_stop_sequences_are_dropped(stop: Any, expected: list[str] | None) -> None:
    out = chat_to_messages_request({"messages": [user("Hi")], "stop": stop}, "c")
    assert out.get("stop_sequences") == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    chat = {"model": "m", "messages": [user("Hi")], "tool_choice": "none"}
    assert "tool_choice" not in chat_to_messages_request(chat, "c")


CHAT_REQUEST_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("no messages", {"model": "m"}, "messages"),
    ("bad role", {"messages": [{"role": "function", "content": "x", "name": "f"}]}, "role"),
    ("n > 1", {"messages": [user("x")], "n": 3}, "n > 1"),
    (
        "audio part",
        {"messages": [user([{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}])]},
        "'input_audio' is not supported",
    ),
    (
        "image data URL without base64",
        {"messages": [user([{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}])]},
        "base64 data: URL",
    ),
    (
        "image from a file URL",
        {"messages": [user([{"type": "image_url", "image_url": {"url": "file:///etc/x"}}])]},
        r"an http\(s\) or data: URL",
    ),
    (
        "file by id",
        {"messages": [user([{"type": "file", "file": {"file_id": "file-1"}}])]},
        "inline file_data",
    ),
    ("tool without id", {"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    (
        "custom tool",
        {"messages": [user("x")], "tools": [{"type": "custom", "custom": {"name": "g"}}]},
        "only function tools",
    ),
    ("tools not a list", {"messages": [user("x")], "tools": "x"}, "'tools' must be an array"),
    (
        "unknown tool_choice",
        {"messages": [user("x")], "tools": [WEATHER_TOOL], "tool_choice": "sometimes"},
        "tool_choice",
    ),
    (
        "tool_choice function not an object",
        {"messages": [user("x")], "tools": [WEATHER_TOOL], "tool_choice": {"function": "f"}},
        "tool_choice.function.name",
    ),
    ("zero max_tokens", {"messages": [user("x")], "max_tokens": 0}, "max_tokens"),
    ("string max_tokens", {"messages": [user("x")], "max_completion_tokens": "9"}, "max_comp"),
]


@pytest.mark.parametrize(
    ("chat", "match"), [c[1:] for c in CHAT_REQUEST_ERRORS], ids=[c[0] for c in CHAT_REQUEST_ERRORS]
)
def test_chat_to_messages_request_errors(chat: dict[str, Any], match: str) -> None:
    with pytest.raises(BadRequest, match=match) as info:
        chat_to_messages_request({"model": "m", **chat}, "c")
    assert info.value.status == 400
    assert info.value.envelope()["error"]["type"] == "invalid_request_error"


def test_a_whole_refusal_is_text_with_stop_reason_refusal() -> None:
    chat = {"id": "c", "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": None, "refusal": "No."}}]}
    message = chat_to_messages_response(chat, "gpt-x")
    assert (message["content"], message["stop_reason"]) == ([{"type": "text", "text": "No."}], "refusal")
    anthropic.types.Message.model_validate(message)


def test_a_tool_results_image_and_its_failure_reach_a_chat_model() -> None:
    """OpenAI tool messages hold text: an image a tool returned (Claude Code reading a PNG) goes
    in the user message that follows, and is_error is said in the text (both were dropped)."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
    msg = {"model": "claude-x", "max_tokens": 10, "messages": [
        user("look"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}},
                                          {"type": "tool_use", "id": "t2", "name": "run", "input": {}}]},
        user([{"type": "tool_result", "tool_use_id": "t1",
               "content": [{"type": "text", "text": "a.png"}, image]},
              {"type": "tool_result", "tool_use_id": "t2", "content": "exit 1", "is_error": True}]),
    ]}
    chat = valid_chat_request(messages_to_chat_request(valid_anthropic_request(msg), "gpt-x"))
    assert chat["messages"][2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "a.png"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: exit 1"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
    ]


def test_a_text_document_is_its_text_and_one_by_url_is_left_out_and_counted() -> None:
    msg = {"model": "claude-x", "max_tokens": 10, "messages": [user([
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
        {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}},
        {"type": "text", "text": "summarise"}])]}
    drops: list[str] = []
    chat = valid_chat_request(messages_to_chat_request(valid_anthropic_request(msg), "gpt-x", drops=drops))
    assert chat["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "notes"}, {"type": "text", "text": "summarise"}]}]
    assert drops == ["content_part"]  # a 400 before, for both


def test_translation_error_names_the_field() -> None:
    kind = {"id": "a", "type": "custom", "custom": {"name": "f", "input": "x"}}
    chat = {"messages": [user("x"), {"role": "assistant", "tool_calls": [kind]}]}
    with pytest.raises(TranslationError) as info:
        chat_to_messages_request(chat, "c")
    assert info.value.param == "messages[1].tool_calls[0]"


# --- Anthropic response -> OpenAI response ------------------------------------------------


def anthropic_message(content: list[dict[str, Any]], stop: str | None, **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7, **usage},
    }


def test_messages_to_chat_response_text() -> None:
    msg = anthropic_message(
        [{"type": "text", "text": "Hello"}, {"type": "text", "text": ", world"}], "end_turn"
    )
    out = valid_chat_response(messages_to_chat_response(valid_message(msg), "anthropic/c", created=5))
    assert out == {
        "id": "chatcmpl-01XFDUDYJgAACzvnptvVoYEL",
        "object": "chat.completion",
        "created": 5,
        "model": "anthropic/c",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello, world", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 7,
            "total_tokens": 19,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def test_messages_to_chat_response_tool_use() -> None:
    msg = anthropic_message(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ],
        "tool_use",
    )
    out = valid_chat_response(messages_to_chat_response(valid_message(msg), "m"))
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [
        call("toolu_1", "get_weather", '{"city":"Oslo"}'),
        call("toolu_2", "now", "{}"),
    ]


def test_messages_to_chat_response_tool_only_has_null_content() -> None:
    msg = anthropic_message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "tool_use")
    out = valid_chat_response(messages_to_chat_response(msg, "m"))
    assert out["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
    ],
)
def test_finish_reasons(stop: str | None, finish: str) -> None:
    out = valid_chat_response(messages_to_chat_response(anthropic_message([], stop), "m"))
    assert out["choices"][0]["finish_reason"] == finish


def test_usage_counts_cached_input_as_prompt() -> None:
    msg = anthropic_message(
        [{"type": "text", "text": "x"}],
        "end_turn",
        cache_creation_input_tokens=100,
        cache_read_input_tokens=1000,
    )
    usage = valid_chat_response(messages_to_chat_response(valid_message(msg), "m"))["usage"]
    assert usage == {
        "prompt_tokens": 1112,
        "completion_tokens": 7,
        "total_tokens": 1119,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }


# --- Anthropic request -> OpenAI request --------------------------------------------------

MESSAGES_TO_CHAT: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "system string",
        {"model": "c", "max_tokens": 100, "system": "Be brief.", "messages": [user("Hi")]},
        {
            "model": "gpt-x",
            "messages": [{"role": "system", "content": "Be brief."}, user("Hi")],
            "max_tokens": 100,
        },
    ),
    (
        "system blocks, text and image blocks",
        {
            "model": "c",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            "messages": [
                user(
                    [
                        {"type": "text", "text": "Look:"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    ]
                ),
                user([{"type": "text", "text": "only text"}]),
            ],
        },
        {
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "A\nB"},
                user(
                    [
                        {"type": "text", "text": "Look:"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG_B64}"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                    ]
                ),
                user("only text"),
            ],
            "max_tokens": 100,
        },
    ),
    (
        "tool conversation: tool results become tool messages before the user text",
        {
            "model": "c",
            "max_tokens": 1024,
            "messages": [
                user("Weather?"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "...", "signature": "s"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_A",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {"type": "tool_use", "id": "toolu_B", "name": "now", "input": {}},
                    ],
                },
                user(
                    [
                        {"type": "tool_result", "tool_use_id": "toolu_A", "content": "18C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_B",
                            "content": [
                                {"type": "text", "text": "12:00"},
                                {"type": "text", "text": "UTC"},
                            ],
                            "is_error": False,
                        },
                        {"type": "text", "text": "Thanks"},
                    ]
                ),
                {"role": "assistant", "content": "It is 18C."},
            ],
        },
        {
            "model": "gpt-x",
            "messages": [
                user("Weather?"),
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        call("toolu_A", "get_weather", '{"city":"Paris"}'),
                        call("toolu_B", "now", "{}"),
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_A", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_B", "content": "12:00\nUTC"},
                user("Thanks"),
                {"role": "assistant", "content": "It is 18C."},
            ],
            "max_tokens": 1024,
        },
    ),
    (
        "sampling, stop sequences, stream, metadata",
        {
            "model": "c",
            "max_tokens": 10,
            "messages": [user("Hi")],
            "stop_sequences": ["###"],
            "temperature": 0.2,
            "top_p": 0.5,
            "top_k": 40,
            "stream": True,
            "metadata": {"user_id": "u-1"},
        },
        {
            "model": "gpt-x",
            "messages": [user("Hi")],
            "max_tokens": 10,
            "stop": ["###"],
            "temperature": 0.2,
            "top_p": 0.5,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": hashlib.sha256(b"u-1").hexdigest(),  # Claude Code's ~150 chars: past OpenAI's 64
        },
    ),
]


@pytest.mark.parametrize(
    ("msg", "expected"), [c[1:] for c in MESSAGES_TO_CHAT], ids=[c[0] for c in MESSAGES_TO_CHAT]
)
def test_messages_to_chat_request(msg: dict[str, Any], expected: dict[str, Any]) -> None:
    original = copy.deepcopy(msg)
    valid_anthropic_request(msg)
    assert valid_chat_request(messages_to_chat_request(msg, "gpt-x")) == expected
    assert msg == original


ANTHROPIC_TOOL_CHOICES: list[tuple[dict[str, Any] | None, dict[str, Any]]] = [
    (None, {}),
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    (
        {"type": "tool", "name": "get_weather"},
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    ),
    (
        {"type": "auto", "disable_parallel_tool_use": True},
        {"tool_choice": "auto", "parallel_tool_calls": False},
    ),
]


@pytest.mark.parametrize(("choice", "expected"), ANTHROPIC_TOOL_CHOICES)
def test_anthropic_tool_choice(choice: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    msg: dict[str, Any] = {
        "model": "c",
        "max_tokens": 5,
        "messages": [user("Hi")],
        "tools": [ANTHROPIC_WEATHER_TOOL],
    }
    if choice is not None:
        msg["tool_choice"] = choice
    out = valid_chat_request(messages_to_chat_request(valid_anthropic_request(msg), "g"))
    assert out["tools"] == [WEATHER_TOOL]
    assert {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out} == expected


def test_max_tokens_field_for_models_that_refuse_max_tokens() -> None:
    msg = {"model": "c", "max_tokens": 64, "messages": [user("Hi")]}
    out = messages_to_chat_request(msg, "o3", max_tokens_field="max_completion_tokens")
    assert valid_chat_request(out)["max_completion_tokens"] == 64
    assert "max_tokens" not in out


MESSAGES_REQUEST_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("no messages", {}, "messages"),
    ("system role in messages", {"messages": [{"role": "system", "content": "x"}]}, "role"),
    (
        "server tool",
        {"messages": [user("x")], "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        "server tool 'web_search_20250305'",
    ),
    (
        "unknown block",
        {"messages": [user([{"type": "search_result", "source": "s", "title": "t"}])]},
        "'search_result' is not supported",
    ),
    (
        "file source",
        {"messages": [user([{"type": "image", "source": {"type": "file", "file_id": "f"}}])]},
        "base64 and url sources",
    ),
    (
        "unknown tool_choice",
        {"messages": [user("x")], "tools": [ANTHROPIC_WEATHER_TOOL], "tool_choice": {"type": "x"}},
        "tool_choice",
    ),
]


@pytest.mark.parametrize(
    ("msg", "match"),
    [c[1:] for c in MESSAGES_REQUEST_ERRORS],
    ids=[c[0] for c in MESSAGES_REQUEST_ERRORS],
)
def test_messages_to_chat_request_errors(msg: dict[str, Any], match: str) -> None:
    with pytest.raises(TranslationError, match=match):
        messages_to_chat_request({"model": "c", "max_tokens": 5, **msg}, "g")


# --- OpenAI response -> Anthropic response ------------------------------------------------


def chat_completion(
    message: dict[str, Any], finish: str | None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
    }


def test_chat_to_messages_response_text() -> None:
    chat = valid_chat_response(
        chat_completion({"role": "assistant", "content": "Hello!", "refusal": None}, "stop")
    )
    assert valid_message(chat_to_messages_response(chat, "openai/gpt-4o")) == {
        "id": "msg_B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "type": "message",
        "role": "assistant",
        "model": "openai/gpt-4o",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 19, "output_tokens": 10},
    }


def test_chat_to_messages_response_tool_calls() -> None:
    chat = valid_chat_response(
        chat_completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    call("call_a", "get_weather", '{"city": "Oslo"}'),
                    call("call_b", "now", ""),
                ],
            },
            "tool_calls",
        )
    )
    out = valid_message(chat_to_messages_response(chat, "m"))
    assert out["stop_reason"] == "tool_use"
    assert out["content"] == [
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_b", "name": "now", "input": {}},
    ]


def test_tool_calls_with_finish_stop_still_say_tool_use() -> None:
    # Ollama and older vLLM report "stop" after tool calls; Anthropic agents wait for tool_use.
    chat = chat_completion({"role": "assistant", "tool_calls": [call("c", "f", "{}")]}, "stop")
    assert chat_to_messages_response(chat, "m")["stop_reason"] == "tool_use"


def test_invalid_tool_arguments_are_kept_visible() -> None:
    chat = chat_completion(
        {
            "role": "assistant",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{bad"}}],
        },
        "tool_calls",
    )
    block = valid_message(chat_to_messages_response(chat, "m"))["content"][0]
    assert block["input"] == {"_raw_arguments": "{bad"}
    assert block["id"].startswith("toolu_")


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("something_new", "end_turn"),
    ],
)
def test_stop_reasons(finish: str | None, stop: str) -> None:
    chat = chat_completion({"role": "assistant", "content": "x"}, finish)
    assert valid_message(chat_to_messages_response(chat, "m"))["stop_reason"] == stop


def test_cached_prompt_tokens_become_cache_reads() -> None:
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
    }
    chat = valid_chat_response(chat_completion({"role": "assistant", "content": "x"}, "stop", usage))
    assert valid_message(chat_to_messages_response(chat, "m"))["usage"] == {
        "input_tokens": 86,
        "output_tokens": 300,
        "cache_read_input_tokens": 1920,
    }


def test_refusal_and_missing_usage() -> None:
    chat = chat_completion({"role": "assistant", "content": None, "refusal": "I can't."}, "stop")
    del chat["usage"]
    out = valid_message(chat_to_messages_response(chat, "m"))
    assert out["content"] == [{"type": "text", "text": "I can't."}]
    assert out["usage"] == {"input_tokens": 0, "output_tokens": 0}


# --- Round trips ---------------------------------------------------------------------------


def test_anthropic_request_round_trip() -> None:
    msg = valid_anthropic_request(
        {
            "model": "claude-x",
            "max_tokens": 512,
            "system": "You are a database expert.",
            "messages": [
                user("Postgres or Mongo?"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me look."},
                        {
                            "type": "tool_use",
                            "id": "toolu_01",
                            "name": "get_db_benchmarks",
                            "input": {"dbs": ["postgres", "mongodb"], "n": 3},
                        },
                        {"type": "tool_use", "id": "toolu_02", "name": "now", "input": {}},
                    ],
                },
                user(
                    [
                        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "pg wins"},
                        {"type": "tool_result", "tool_use_id": "toolu_02", "content": "noon"},
                    ]
                ),
                {"role": "assistant", "content": "Postgres."},
                user("Why?"),
            ],
            "tools": [ANTHROPIC_WEATHER_TOOL],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "stream": True,
            "metadata": {"user_id": "u"},
        }
    )
    chat = valid_chat_request(messages_to_chat_request(msg, "gpt-x"))
    digested = {**msg, "metadata": {"user_id": hashlib.sha256(b"u").hexdigest()}}  # OpenAI's user: 64 max
    assert valid_anthropic_request(chat_to_messages_request(chat, "claude-x")) == digested


def test_chat_request_round_trip() -> None:
    chat = valid_chat_request(
        {
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "Be brief."},
                user("Weather in Paris and Oslo?"),
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        call("call_1", "get_weather", '{"city":"Paris"}'),
                        call("call_2", "get_weather", '{"city":"Oslo"}'),
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": "9C"},
                {"role": "assistant", "content": "Paris 18C, Oslo 9C."},
                user(
                    [
                        {"type": "text", "text": "Photo:"},
                        {"type": "image_url", "image_url": {"url": "https://x.test/p.jpg"}},
                    ]
                ),
            ],
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "max_tokens": 300,
            "stop": ["END"],
            "temperature": 0.3,
            "user": "u",
        }
    )
    back = valid_chat_request(messages_to_chat_request(chat_to_messages_request(chat, "claude-x"), "gpt-x"))
    assert back == {**chat, "user": hashlib.sha256(b"u").hexdigest()}  # the user id, digested


@pytest.mark.parametrize(("stop", "tool"), [("end_turn", False), ("tool_use", True), ("max_tokens", False)])
def test_anthropic_response_round_trip(stop: str, tool: bool) -> None:
    content: list[dict[str, Any]] = [{"type": "text", "text": "Checking."}]
    if tool:
        content.append({"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": [1, 2]}})
    msg = valid_message(anthropic_message(content, stop, cache_read_input_tokens=30))
    chat = valid_chat_response(messages_to_chat_response(msg, "m"))
    back = valid_message(chat_to_messages_response(chat, "claude-sonnet-4-20250514"))
    assert back == msg


@pytest.mark.parametrize("finish", ["stop", "length", "tool_calls"])
def test_chat_response_round_trip(finish: str) -> None:
    message: dict[str, Any] = {"role": "assistant", "content": "Hi", "refusal": None}
    if finish == "tool_calls":
        message["tool_calls"] = [call("call_1", "f", '{"x":1}')]
    usage = {
        "prompt_tokens": 50,
        "completion_tokens": 5,
        "total_tokens": 55,
        "prompt_tokens_details": {"cached_tokens": 20},
    }
    chat = valid_chat_response(chat_completion(message, finish, usage))
    back = valid_chat_response(
        messages_to_chat_response(
            chat_to_messages_response(chat, "m"), "gpt-4o-2024-08-06", created=chat["created"]
        )
    )
    assert back == chat


# --- Errors --------------------------------------------------------------------------------

ERROR_TYPES = [
    (400, "invalid_request_error"),
    (401, "authentication_error"),
    (402, "billing_error"),
    (403, "permission_error"),
    (404, "not_found_error"),
    (409, "invalid_request_error"),
    (413, "request_too_large"),
    (422, "invalid_request_error"),
    (429, "rate_limit_error"),
    (500, "api_error"),
    (502, "api_error"),
    (503, "overloaded_error"),
    (504, "timeout_error"),
    (529, "overloaded_error"),
    (599, "api_error"),
]


@pytest.mark.parametrize(("status", "kind"), ERROR_TYPES)
def test_anthropic_error_body(status: int, kind: str) -> None:
    body = anthropic_error_body(status, "went wrong")
    assert body == {"type": "error", "error": {"type": kind, "message": "went wrong"}}
    if kind != "request_too_large":  # documented by Anthropic, absent from the SDK's union
        anthropic.types.ErrorResponse.model_validate(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"message": "Rate limit reached for gpt-4o", "type": "requests",'
         b' "param": null, "code": "rate_limit_exceeded"}}', "Rate limit reached for gpt-4o"),
        (b'{"error": "model \\"llama3\\" not found"}', 'model "llama3" not found'),
        (b'{"object": "error", "message": "bad prompt", "code": 400}', "bad prompt"),
        (b'{"detail": "Field required"}', "Field required"),
        (b"Service Unavailable", None),
        (b"[1, 2]", None),
    ],
)
def test_the_message_of_an_openai_style_error_in_the_shapes_servers_send(
    body: bytes, expected: str | None
) -> None:
    assert openai_error_message(body) == expected

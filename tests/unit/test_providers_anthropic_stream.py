"""Streaming translation, proven by the official SDKs' own stream parsers.

The recorded upstream streams below follow the wire formats of the Anthropic Messages
streaming API and OpenAI Chat Completions streaming (``stream_options.include_usage``).
Each is fed whole, split in two at every byte, and one byte at a time; the client must get
the same bytes every way. The translated streams are then served to the real ``openai`` and
``anthropic`` SDKs (over a mock transport, no network), which parse and accumulate them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import anthropic
import httpx2
import openai
import orjson
import pytest

from gateway.errors import BadGateway
from gateway.providers.anthropic_stream import ChatToMessagesStream, MessagesToChatStream
from gateway.sse import ServerSentEvent, SSEDecoder


def anthropic_sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


def openai_sse(*chunks: dict[str, Any] | str) -> bytes:
    return b"".join(
        b"data: " + (c.encode() if isinstance(c, str) else orjson.dumps(c)) + b"\n\n" for c in chunks
    )


TEXT = "Hello, caf\u00e9 \u2615 \U0001f680!"  # multibyte characters: splits land inside them

# --- Recorded Anthropic streams (upstream of an OpenAI client) -----------------------------


def _message_start(msg_id: str, input_tokens: int, cache_read: int = 0) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": cache_read,
                "output_tokens": 1,
            },
        },
    }


def _text_delta(index: int, text: str) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }


def _json_delta(index: int, partial: str) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "input_json_delta", "partial_json": partial},
    }


def _block(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


ANTHROPIC_TEXT = anthropic_sse(
    _message_start("msg_01Text", 25, cache_read=10),
    _block(0, {"type": "text", "text": ""}),
    {"type": "ping"},
    _text_delta(0, "Hello"),
    _text_delta(0, TEXT[5:]),
    _stop(0),
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 15},
    },
    {"type": "message_stop"},
)

ANTHROPIC_TOOL = anthropic_sse(
    _message_start("msg_01Tool", 472),
    _block(0, {"type": "text", "text": ""}),
    _text_delta(0, "I'll check."),
    _stop(0),
    _block(1, {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {}}),
    _json_delta(1, ""),
    _json_delta(1, '{"city": "Par'),
    {"type": "ping"},
    _json_delta(1, 'is", "unit": "c"}'),
    _stop(1),
    _block(2, {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}}),
    _json_delta(2, '{"tz":'),
    _json_delta(2, ' "Europe/Paris"}'),
    _stop(2),
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 472, "output_tokens": 89},
    },
    {"type": "message_stop"},
)

ANTHROPIC_ERROR = anthropic_sse(
    _message_start("msg_01Err", 9),
    _block(0, {"type": "text", "text": ""}),
    _text_delta(0, "Hel"),
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
)

# --- Recorded OpenAI streams (upstream of an Anthropic client) -----------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


def _usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    chunk = _chunk({})
    chunk["choices"] = []
    chunk["usage"] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    return chunk


def _tool_delta(index: int, arguments: str, **start: str) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index}
    if start:
        call.update(id=start["id"], type="function")
        call["function"] = {"name": start["name"], "arguments": arguments}
    else:
        call["function"] = {"arguments": arguments}
    return _chunk({"tool_calls": [call]})


OPENAI_TEXT = openai_sse(
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    _chunk({"content": "Hello"}),
    _chunk({"content": TEXT[5:]}),
    _chunk({}, "stop"),
    _usage_chunk(19, 10, cached=4),
    "[DONE]",
)

OPENAI_TOOL = openai_sse(
    _chunk({"role": "assistant", "content": "Let me check.", "refusal": None}),
    _tool_delta(0, "", id="call_A", name="get_weather"),
    _tool_delta(0, '{"ci'),
    _tool_delta(0, 'ty": "Paris"}'),
    _tool_delta(1, "", id="call_B", name="get_time"),
    _tool_delta(1, '{"tz": "Europe/Paris"}'),
    _chunk({}, "tool_calls"),
    _usage_chunk(82, 40),
    "[DONE]",
)

OPENAI_ERROR = openai_sse(
    _chunk({"role": "assistant", "content": "Hel"}),
    {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    },
)


class Translator(Protocol):
    usage: dict[str, int] | None
    first_content_sent: bool

    def feed(self, chunk: bytes) -> bytes: ...
    def close(self) -> bytes: ...


def to_chat(include_usage: bool = True) -> MessagesToChatStream:
    return MessagesToChatStream("anthropic/claude", include_usage, created=1700000000)


def to_messages() -> ChatToMessagesStream:
    return ChatToMessagesStream("openai/gpt-4o")


def run(translator: Translator, pieces: list[bytes]) -> bytes:
    return b"".join(translator.feed(piece) for piece in pieces) + translator.close()


def events(raw: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.flush()


def chat_chunks(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e.data) for e in events(raw) if e.data != "[DONE]"]


def anthropic_events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for e in events(raw):
        body = orjson.loads(e.data)
        assert e.event == body["type"]  # Anthropic names every event after its type
        out.append(body)
    return out


# --- Every split gives the same output ------------------------------------------------------

SPLIT_CASES = [
    ("anthropic text", ANTHROPIC_TEXT, lambda: to_chat()),
    ("anthropic tool", ANTHROPIC_TOOL, lambda: to_chat()),
    ("anthropic tool, no usage", ANTHROPIC_TOOL, lambda: to_chat(include_usage=False)),
    ("anthropic error", ANTHROPIC_ERROR, lambda: to_chat()),
    ("openai text", OPENAI_TEXT, to_messages),
    ("openai tool", OPENAI_TOOL, to_messages),
    ("openai error", OPENAI_ERROR, to_messages),
]


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize(("raw", "make"), [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES])
def test_every_split_gives_the_same_output(raw: bytes, make: Any, crlf: bool) -> None:
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    reference = make()
    whole = run(reference, [raw])
    assert whole
    for cut in range(len(raw) + 1):
        translator = make()
        assert run(translator, [raw[:cut], raw[cut:]]) == whole, f"split at byte {cut}"
        assert translator.usage == reference.usage
    one_by_one = make()
    assert run(one_by_one, [raw[i : i + 1] for i in range(len(raw))]) == whole
    assert (one_by_one.usage, one_by_one.first_content_sent) == (
        reference.usage,
        reference.first_content_sent,
    )


# --- Anthropic upstream -> OpenAI client ---------------------------------------------------


@contextmanager
def openai_client(body: bytes) -> Iterator[openai.OpenAI]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/chat/completions"
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with openai.OpenAI(
        api_key="test",
        base_url="http://gateway.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
        _strict_response_validation=True,
    ) as client:
        yield client


CHAT_ARGS: dict[str, Any] = {
    "model": "anthropic/claude",
    "messages": [{"role": "user", "content": "Hi"}],
    "stream_options": {"include_usage": True},
}


def test_text_stream_read_by_openai_sdk() -> None:
    translator = to_chat()
    body = run(translator, [ANTHROPIC_TEXT])
    with openai_client(body) as client:
        chunks = list(client.chat.completions.create(stream=True, **CHAT_ARGS))
    assert {c.id for c in chunks} == {"chatcmpl-01Text"}
    assert {c.model for c in chunks} == {"anthropic/claude"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (35, 15)
    assert translator.usage == {"prompt_tokens": 35, "completion_tokens": 15, "cached_prompt_tokens": 10}
    assert translator.first_content_sent


def test_tool_stream_accumulated_by_openai_sdk() -> None:
    body = run(to_chat(), [ANTHROPIC_TOOL])
    with openai_client(body) as client, client.chat.completions.stream(**CHAT_ARGS) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check."
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name) for c in calls] == [  # type: ignore[union-attr]
        ("toolu_01A", "get_weather"),
        ("toolu_01B", "get_time"),
    ]
    assert [orjson.loads(c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        {"city": "Paris", "unit": "c"},
        {"tz": "Europe/Paris"},
    ]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (472, 89)


def test_a_streamed_call_without_arguments_reaches_an_openai_client_as_an_empty_object() -> None:
    """Claude streams a no-argument call as a block whose input is {} and no JSON delta: the
    OpenAI SDK's parsing helpers (and json.loads) failed on arguments ''."""
    body = run(to_chat(), [anthropic_sse(
        _message_start("msg_1", 5), _block(0, {"type": "tool_use", "id": "t1", "name": "now", "input": {}}),
        _stop(0), {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                   "usage": {"output_tokens": 3}},
        {"type": "message_stop"})])
    with openai_client(body) as client, client.chat.completions.stream(**CHAT_ARGS) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.arguments == "{}"  # type: ignore[union-attr]


def test_tool_call_deltas_carry_the_openai_index() -> None:
    chunks = chat_chunks(run(to_chat(), [ANTHROPIC_TOOL]))
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    # Anthropic blocks 1 and 2 are tool calls 0 and 1; empty fragments are not sent.
    assert [(c["index"], c.get("id"), c["function"]["arguments"]) for c in calls] == [
        (0, "toolu_01A", ""),
        (0, None, '{"city": "Par'),
        (0, None, 'is", "unit": "c"}'),
        (1, "toolu_01B", ""),
        (1, None, '{"tz":'),
        (1, None, ' "Europe/Paris"}'),
    ]


def test_upstream_error_becomes_final_error_chunk() -> None:
    translator = to_chat()
    body = translator.feed(ANTHROPIC_ERROR)
    assert body.endswith(b"data: [DONE]\n\n")
    assert translator.close() == b""
    last = chat_chunks(body)[-1]
    assert last == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    with openai_client(body) as client, pytest.raises(openai.APIError, match="Overloaded"):
        for _ in client.chat.completions.create(stream=True, **CHAT_ARGS):
            pass


@pytest.mark.parametrize("raw", [ANTHROPIC_TEXT, ANTHROPIC_TOOL, ANTHROPIC_ERROR])
def test_done_sent_exactly_once_at_the_end(raw: bytes) -> None:
    translator = to_chat()
    body = run(translator, [raw])
    assert body.count(b"[DONE]") == 1
    assert body.endswith(b"\n\ndata: [DONE]\n\n")
    assert translator.feed(raw) == b""
    assert translator.close() == b""


def test_done_is_sent_on_message_stop_without_waiting_for_close() -> None:
    assert to_chat().feed(ANTHROPIC_TEXT).endswith(b"data: [DONE]\n\n")


def test_first_content_sent_only_once_content_flows() -> None:
    translator = to_chat()
    start, rest = ANTHROPIC_TOOL.split(b"event: content_block_delta", 1)
    assert translator.feed(start)  # role chunk
    assert not translator.first_content_sent
    translator.feed(b"event: content_block_delta" + rest)
    assert translator.first_content_sent


def test_tool_call_alone_counts_as_first_content() -> None:
    translator = to_chat()
    translator.feed(anthropic_sse(_message_start("msg_1", 3)))
    assert not translator.first_content_sent
    block = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
    translator.feed(anthropic_sse(_block(0, block)))
    assert translator.first_content_sent


def test_without_include_usage_there_is_no_usage_anywhere() -> None:
    translator = to_chat(include_usage=False)
    chunks = chat_chunks(run(translator, [ANTHROPIC_TEXT]))
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert translator.usage == {"prompt_tokens": 35, "completion_tokens": 15, "cached_prompt_tokens": 10}


def test_truncated_anthropic_stream_ends_with_an_error() -> None:
    translator = to_chat()
    cut = ANTHROPIC_TEXT.index(b"event: message_delta")
    body = translator.feed(ANTHROPIC_TEXT[:cut]) + translator.close()
    last = chat_chunks(body)[-1]
    assert "ended before the response was complete" in last["error"]["message"]
    assert body.endswith(b"data: [DONE]\n\n")


def test_lost_message_stop_still_ends_normally() -> None:
    translator = to_chat()
    cut = ANTHROPIC_TEXT.index(b"event: message_stop")
    body = translator.feed(ANTHROPIC_TEXT[:cut]) + translator.close()
    chunks = chat_chunks(body)
    assert not any("error" in c for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 15
    assert body.endswith(b"data: [DONE]\n\n")


def test_message_stop_without_message_delta_still_finishes() -> None:
    raw = anthropic_sse(_message_start("msg_1", 3), {"type": "message_stop"})
    finishes = [c["choices"][0]["finish_reason"] for c in chat_chunks(run(to_chat(), [raw])) if c["choices"]]
    assert finishes == [None, "stop"]


def test_fail_mid_stream() -> None:
    translator = to_chat()
    translator.feed(ANTHROPIC_TEXT[:300])
    body = translator.fail("upstream timed out", 504)
    assert chat_chunks(body) == [
        {
            "error": {
                "message": "upstream timed out",
                "type": "timeout_error",
                "param": None,
                "code": "timeout_error",
            }
        }
    ]
    assert body.endswith(b"data: [DONE]\n\n")
    assert translator.fail("again") == b""
    assert translator.feed(ANTHROPIC_TEXT[300:]) == b""
    assert translator.close() == b""


def test_invalid_json_from_anthropic_is_an_error() -> None:
    body = run(to_chat(), [b"event: message_start\ndata: {not json\n\n"])
    assert "not valid JSON" in chat_chunks(body)[-1]["error"]["message"]


def test_thinking_blocks_and_unknown_events_are_dropped() -> None:
    raw = anthropic_sse(
        _message_start("msg_1", 3),
        _block(0, {"type": "thinking", "thinking": "", "signature": ""}),
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}},
        _stop(0),
        {"type": "some_future_event"},
        _block(1, {"type": "text", "text": ""}),
        _text_delta(1, "ok"),
        {"type": "message_stop"},
    )
    deltas = [c["choices"][0]["delta"] for c in chat_chunks(run(to_chat(), [raw])) if c["choices"]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "ok"}, {}]


# --- OpenAI-compatible upstream -> Anthropic client ----------------------------------------


@contextmanager
def anthropic_client(body: bytes) -> Iterator[anthropic.Anthropic]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages"
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with anthropic.Anthropic(
        api_key="test",
        base_url="http://gateway.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
        _strict_response_validation=True,
    ) as client:
        yield client


MESSAGES_ARGS: dict[str, Any] = {
    "model": "openai/gpt-4o",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Hi"}],
}


def test_text_stream_read_by_anthropic_sdk() -> None:
    translator = to_messages()
    body = run(translator, [OPENAI_TEXT])
    with anthropic_client(body) as client:
        with client.messages.stream(**MESSAGES_ARGS) as stream:
            final = stream.get_final_message()
        raw_events = list(client.messages.create(stream=True, **MESSAGES_ARGS))
    assert final.id == "msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert final.model == "openai/gpt-4o"
    assert [(b.type, getattr(b, "text", None)) for b in final.content] == [("text", TEXT)]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (15, 10)
    assert final.usage.cache_read_input_tokens == 4
    assert [e.type for e in raw_events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert translator.usage == {"prompt_tokens": 19, "completion_tokens": 10, "cached_prompt_tokens": 4}
    assert translator.first_content_sent


def test_tool_stream_accumulated_by_anthropic_sdk() -> None:
    body = run(to_messages(), [OPENAI_TOOL])
    with anthropic_client(body) as client, client.messages.stream(**MESSAGES_ARGS) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.model_dump(exclude_none=True) for b in final.content] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_A", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_B", "name": "get_time", "input": {"tz": "Europe/Paris"}},
    ]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (82, 40)


def test_blocks_are_opened_and_closed_in_order() -> None:
    sequence = [
        (e["type"], e.get("index"))
        for e in anthropic_events(run(to_messages(), [OPENAI_TOOL]))
        if e["type"] != "content_block_delta"
    ]
    assert sequence == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]


def test_upstream_error_chunk_becomes_error_event() -> None:
    translator = to_messages()
    body = translator.feed(OPENAI_ERROR)
    assert translator.close() == b""
    last = anthropic_events(body)[-1]
    assert last == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "The server had an error while processing your request.",
        },
    }
    with anthropic_client(body) as client, pytest.raises(anthropic.APIStatusError) as info:
        for _ in client.messages.create(stream=True, **MESSAGES_ARGS):
            pass
    assert "The server had an error" in str(info.value)


@pytest.mark.parametrize(("error", "kind"), [
    ({"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}, "rate_limit_error"),
    ({"message": "slow down", "type": "tokens", "code": "rate_limit_exceeded"}, "rate_limit_error"),
    ({"message": "bad", "type": "invalid_request_error", "code": None}, "invalid_request_error"),
    ({"message": "busy", "code": 529}, "overloaded_error"),
])
def test_an_upstream_error_keeps_its_kind_for_retries(error: dict[str, Any], kind: str) -> None:
    """Only a numeric code was read: a rate limit (a string code, a type) became api_error."""
    translator = to_messages()
    body = translator.feed(openai_sse(_chunk({"content": "hi"}), {"error": error}))
    assert anthropic_events(body)[-1]["error"]["type"] == kind


def test_message_stop_sent_exactly_once() -> None:
    translator = to_messages()
    body = run(translator, [OPENAI_TEXT])
    assert body.count(b"event: message_stop") == 1
    assert body.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert translator.feed(OPENAI_TEXT) == b""
    assert translator.close() == b""


def test_missing_done_after_finish_reason_still_ends_normally() -> None:
    raw = OPENAI_TEXT.removesuffix(b"data: [DONE]\n\n")
    translator = to_messages()
    body = translator.feed(raw)
    assert b"message_stop" not in body  # waiting: a usage chunk may still come
    types = [e["type"] for e in anthropic_events(body + translator.close())]
    assert types[-2:] == ["message_delta", "message_stop"]


def test_truncated_openai_stream_ends_with_an_error() -> None:
    cut = OPENAI_TOOL.index(b'"finish_reason":"tool_calls"')
    cut = OPENAI_TOOL.rindex(b"data: ", 0, cut)
    events_ = anthropic_events(run(to_messages(), [OPENAI_TOOL[:cut]]))
    assert events_[-1]["type"] == "error"
    assert "ended before the response was complete" in events_[-1]["error"]["message"]
    assert "message_stop" not in [e["type"] for e in events_]


def test_empty_upstream_stream_is_an_error() -> None:
    assert anthropic_events(run(to_messages(), [b""]))[-1]["error"]["type"] == "api_error"


def test_fail_mid_stream_anthropic() -> None:
    translator = to_messages()
    translator.feed(OPENAI_TEXT[:400])
    body = translator.fail("upstream timed out", 504)
    assert anthropic_events(body) == [
        {"type": "error", "error": {"type": "timeout_error", "message": "upstream timed out"}}
    ]
    assert translator.feed(OPENAI_TEXT[400:]) == b""
    assert translator.close() == b""


def test_tool_calls_without_index_or_id_and_finish_stop() -> None:
    # Some compatible servers send each call whole, without index or id, and say "stop".
    raw = openai_sse(
        _chunk({"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": "{}"}}]}),
        _chunk({"tool_calls": [{"id": "x2", "function": {"name": "b", "arguments": '{"k":1}'}}]}),
        _chunk({}, "stop"),
        "[DONE]",
    )
    with anthropic_client(run(to_messages(), [raw])) as client:
        with client.messages.stream(**MESSAGES_ARGS) as stream:
            final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    blocks = [b.model_dump() for b in final.content]
    assert [(b["name"], b["input"]) for b in blocks] == [("a", {}), ("b", {"k": 1})]
    assert blocks[0]["id"].startswith("toolu_")
    assert blocks[1]["id"] == "x2"


def test_calls_sent_whole_at_index_0_with_their_own_ids_are_two_tool_uses() -> None:
    raw = openai_sse(
        _chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "a", "arguments": '{"k":1}'}}]}),
        _chunk({"tool_calls": [{"index": 0, "id": "c2", "function": {"name": "a", "arguments": '{"k":2}'}}]}),
        _chunk({}, "tool_calls"),
        "[DONE]",
    )
    with anthropic_client(run(to_messages(), [raw])) as client:
        with client.messages.stream(**MESSAGES_ARGS) as stream:
            final = stream.get_final_message()
    blocks = [b.model_dump() for b in final.content]
    assert [(b["id"], b["input"]) for b in blocks] == [("c1", {"k": 1}), ("c2", {"k": 2})]


def test_interleaved_parallel_calls_and_bad_json_come_out_as_whole_tool_uses() -> None:
    """One chunk starts two calls and later chunks carry both calls' arguments: each block is
    sent whole, in order, and arguments that are not JSON go as _raw_arguments (the SDK raised
    on them, and a block stopped before its arguments came read as {})."""
    raw = openai_sse(
        _chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "a", "arguments": ""}},
                               {"index": 1, "id": "c2", "function": {"name": "b", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"k":'}},
                               {"index": 1, "function": {"arguments": "{city: Paris"}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        _chunk({}, "tool_calls"),
        "[DONE]",
    )
    with anthropic_client(run(to_messages(), [raw])) as client:
        with client.messages.stream(**MESSAGES_ARGS) as stream:
            final = stream.get_final_message()
    assert [(b.id, b.input) for b in final.content] == [  # type: ignore[union-attr]
        ("c1", {"k": 1}), ("c2", {"_raw_arguments": "{city: Paris"})]
    assert final.stop_reason == "tool_use"


def test_a_refusal_from_an_openai_model_is_text_with_stop_reason_refusal() -> None:
    raw = openai_sse(_chunk({"refusal": "I can't "}), _chunk({"refusal": "help."}), _chunk({}, "stop"),
                     "[DONE]")
    with anthropic_client(run(to_messages(), [raw])) as client:
        with client.messages.stream(**MESSAGES_ARGS) as stream:
            final = stream.get_final_message()
    assert [b.text for b in final.content] == ["I can't help."]  # type: ignore[union-attr]
    assert final.stop_reason == "refusal"


def test_usage_absent_reports_zero_tokens() -> None:
    raw = openai_sse(_chunk({"content": "hi"}), _chunk({}, "length"), "[DONE]")
    translator = to_messages()
    delta = [e for e in anthropic_events(run(translator, [raw])) if e["type"] == "message_delta"]
    assert delta == [
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
    ]
    assert translator.usage is None


def test_comments_and_empty_deltas_produce_nothing() -> None:
    translator = to_messages()
    first = translator.feed(b": OPENROUTER PROCESSING\n\n")
    assert first == b""
    start = translator.feed(openai_sse(_chunk({"role": "assistant", "content": ""})))
    assert [e["type"] for e in anthropic_events(start)] == ["message_start"]
    assert not translator.first_content_sent


def test_unexpected_shapes_end_the_stream_with_an_error() -> None:
    raw = anthropic_sse(_message_start("msg_1", 3)) + (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":"x"}\n\n'
    )
    assert "unexpected shape" in chat_chunks(run(to_chat(), [raw]))[-1]["error"]["message"]
    raw = openai_sse(_chunk({"content": "hi"}), {"choices": ["x"]})
    last = anthropic_events(run(to_messages(), [raw]))[-1]
    assert last["type"] == "error"
    assert "unexpected shape" in last["error"]["message"]


@pytest.mark.parametrize("translator", [
    MessagesToChatStream("m", False, max_event_size=1024), ChatToMessagesStream("m", max_event_size=1024)])
def test_an_endless_line_ends_the_translation_with_a_502_at_the_limit(
    translator: MessagesToChatStream | ChatToMessagesStream,
) -> None:
    translator.feed(b"data: ")
    with pytest.raises(BadGateway, match=r"upstream\.max_sse_event_bytes \(1024\)") as caught:
        for _ in range(100):
            translator.feed(b"x" * 100)
    assert caught.value.reason == "too_large"
    assert translator.feed(b"data: {}\n\n") == b"" and translator.close() == b""  # ended for good

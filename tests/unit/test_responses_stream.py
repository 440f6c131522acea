"""The Responses stream translators: at the SSE event limit (`upstream.max_sse_event_bytes`)
translated streams end with a 502 in-band wherever the oversized event is found, and a native
provider's own stream is relayed whole even when its final event is past the limit; what
upstreams send that OpenAI's own streams never do (calls without distinct indexes, refusals,
a stop at max tokens) comes out as the SDK's event types say."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.errors import BadGateway
from gateway.providers.responses_stream import (
    ChatToResponsesStream,
    MessagesToResponsesStream,
    NativeResponsesStream,
)
from gateway.sse import SSEDecoder

LIMIT = 1024


FINISHED = {  # an upstream that said its answer is done (but not that its stream is)
    ChatToResponsesStream: b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    MessagesToResponsesStream: b'event: message_delta\ndata: {"type":"message_delta","delta":'
                               b'{"stop_reason":"end_turn"},"usage":{"output_tokens":1}}\n\n',
}


@pytest.mark.parametrize("make", [ChatToResponsesStream, MessagesToResponsesStream])
@pytest.mark.parametrize("finished", [False, True])
def test_an_oversized_event_left_at_the_end_is_a_502_the_stream_ends_with(make: Any, finished: bool) -> None:
    """The last event, its last line unterminated, passes the limit only when the body ends
    (`close`): each line is within it, the event's data is not."""
    translator = make({}, "m", max_event_size=LIMIT)
    if finished:
        translator.feed(FINISHED[make])
    translator.feed(b"data: " + b"x" * 600 + b"\ndata: " + b"y" * 600)
    with pytest.raises(BadGateway, match=r"max_sse_event_bytes \(1024\)") as caught:
        translator.close()
    events = [orjson.loads(e.data) for e in SSEDecoder().feed(translator.fail_with(caught.value))]
    assert events[-1]["type"] == "response.failed"
    error = events[-1]["response"]["error"]  # the API's fixed codes; the gateway's in the message
    assert error["code"] == "server_error" and error["message"].startswith("upstream_event_too_large")


def test_a_native_stream_whose_final_event_is_past_the_limit_is_relayed_whole() -> None:
    completed = {"type": "response.completed", "sequence_number": 1,
                 "response": {"id": "resp_1", "status": "completed", "output_text": "y" * (2 * LIMIT)}}
    body = (b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
            b"event: response.completed\ndata: " + orjson.dumps(completed) + b"\n\n")
    stream = NativeResponsesStream(LIMIT)
    relayed = b"".join(stream.feed(body[i:i + 100]) for i in range(0, len(body), 100))
    assert relayed + stream.close() == body  # nothing cut, nothing added
    assert stream.final is None  # not kept: too large to watch


def test_a_native_stream_within_the_limit_is_kept_and_one_cut_short_ends_in_error() -> None:
    completed = {"type": "response.completed", "sequence_number": 1,
                 "response": {"id": "resp_1", "status": "completed",
                              "usage": {"input_tokens": 3, "output_tokens": 2,
                                        "input_tokens_details": {"cached_tokens": 1}}}}
    whole = NativeResponsesStream(LIMIT)
    assert whole.feed(b"data: " + orjson.dumps(completed) + b"\n\n") and whole.close() == b""
    assert whole.final is not None and whole.final["id"] == "resp_1"
    assert whole.usage == {"prompt_tokens": 3, "completion_tokens": 2, "cached_prompt_tokens": 1}
    cut = NativeResponsesStream(LIMIT)
    cut.feed(b'data: {"type":"response.created","sequence_number":0}\n\n')
    assert b"upstream_stream_incomplete" in cut.close()


# --- translated streams against the SDK's types --------------------------------------------------

EVENTS = TypeAdapter(ResponseStreamEvent)


def chat_sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def chat_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def translated(translator: Any, body: bytes) -> list[dict[str, Any]]:
    """Every event, checked against the SDK's own event types and numbered without a gap."""
    raw = translator.feed(body) + translator.close()
    events = [orjson.loads(e.data) for e in SSEDecoder().feed(raw)]
    for event in events:
        EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def final_output(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = events[-1]["response"]["output"]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert done == output  # what the items ended as is what the response holds
    return output


def test_calls_sent_whole_each_at_index_0_with_its_own_id_stay_apart() -> None:
    """Gemini's OpenAI-compatible endpoint sends parallel calls this way (and others omit index)."""
    for index in ({"index": 0}, {}):
        body = chat_sse(
            chat_chunk({"tool_calls": [{**index, "id": "call_1", "type": "function",
                                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]}),
            chat_chunk({"tool_calls": [{**index, "id": "call_2", "type": "function",
                                        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]}),
            chat_chunk({}, "tool_calls"))
        output = final_output(translated(ChatToResponsesStream({}, "m"), body))
        assert [(o["call_id"], orjson.loads(o["arguments"])) for o in output] == [
            ("call_1", {"city": "Paris"}), ("call_2", {"city": "Oslo"})]


def test_a_streamed_refusal_is_a_refusal_part_as_in_a_whole_answer() -> None:
    body = chat_sse(chat_chunk({"refusal": "I can't "}), chat_chunk({"refusal": "help with that."}),
                    chat_chunk({}, "stop"))
    events = translated(ChatToResponsesStream({}, "m"), body)
    deltas = [e["delta"] for e in events if e["type"] == "response.refusal.delta"]
    assert deltas == ["I can't ", "help with that."]
    assert [e["refusal"] for e in events if e["type"] == "response.refusal.done"] == ["".join(deltas)]
    [message] = final_output(events)
    assert message["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]


def test_a_message_is_announced_empty_and_its_part_added_once() -> None:
    body = chat_sse(chat_chunk({"content": "hi"}), chat_chunk({}, "stop"))
    events = translated(ChatToResponsesStream({}, "m"), body)
    [added] = [e for e in events if e["type"] == "response.output_item.added"]
    assert added["item"]["content"] == []
    assert len([e for e in events if e["type"] == "response.content_part.added"]) == 1


def test_the_item_the_model_stopped_in_at_max_output_tokens_is_incomplete() -> None:
    body = chat_sse(chat_chunk({"content": "Let me look."}),
                    chat_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                "function": {"name": "weather", "arguments": '{"ci'}}]}),
                    chat_chunk({}, "length"))
    events = translated(ChatToResponsesStream({}, "m"), body)
    assert events[-1]["type"] == "response.incomplete"
    assert [item["status"] for item in final_output(events)] == ["completed", "incomplete"]


def test_an_anthropic_block_cut_at_max_tokens_ends_incomplete() -> None:
    def sse(kind: str, **body: Any) -> bytes:
        return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **body}) + b"\n\n"

    usage = {"input_tokens": 5, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2,
             "output_tokens": 1}
    body = (sse("message_start", message={"id": "msg_1", "usage": usage})
            + sse("content_block_start", index=0, content_block={"type": "text", "text": ""})
            + sse("content_block_delta", index=0, delta={"type": "text_delta", "text": "first"})
            + sse("content_block_stop", index=0)
            + sse("content_block_start", index=1,
                  content_block={"type": "tool_use", "id": "t1", "name": "go"})
            + sse("content_block_stop", index=1)
            + sse("content_block_start", index=2, content_block={"type": "text", "text": ""})
            + sse("content_block_delta", index=2, delta={"type": "text_delta", "text": "and then"})
            + sse("content_block_stop", index=2)
            + sse("message_delta", delta={"stop_reason": "max_tokens"}, usage={"output_tokens": 9})
            + sse("message_stop"))
    events = translated(MessagesToResponsesStream({}, "m"), body)
    output = final_output(events)
    assert [(o["type"], o["status"]) for o in output] == [
        ("message", "completed"), ("function_call", "completed"), ("message", "incomplete")]
    # a call with no arguments: its deltas add up to the arguments it is done with
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(deltas) == output[1]["arguments"] == "{}"
    details = events[-1]["response"]["usage"]["input_tokens_details"]
    assert (details["cached_tokens"], details["cache_write_tokens"]) == (3, 2)
    assert events[-1]["response"]["usage"]["input_tokens"] == 10

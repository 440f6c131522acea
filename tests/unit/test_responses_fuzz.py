"""Fuzzing the Responses translators: whatever a chat or Anthropic upstream streams, split
however the network splits it, the client gets the same well-formed Responses event stream
(the SDK's own types accept every event, numbered from 0, ending once); any JSON body is a
request or a 400, and a valid request always translates or is a 400."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.apis.responses import parse
from gateway.errors import BadRequest
from gateway.providers.responses import to_chat_request
from gateway.providers.responses_anthropic import to_messages_request
from gateway.providers.responses_stream import ChatToResponsesStream, MessagesToResponsesStream
from tests.unit.test_fuzz import (
    FUZZ,
    anthropic_events,
    anthropic_stream,
    cuts,
    decode,
    json_value,
    maybe,
    openai_chunks,
    openai_stream,
    upstream_bytes,
)

EVENTS = TypeAdapter(ResponseStreamEvent)
ENDS = ("response.completed", "response.incomplete", "response.failed")
_IDS = re.compile(rb"(msg|fc|call)_[0-9a-f]{48}")
_CREATED = re.compile(rb'"created_at":[0-9]+')


def translate(make: Any, pieces: list[bytes]) -> bytes:
    translator = make()
    out = b"".join(translator.feed(piece) for piece in pieces) + translator.close()
    assert translator.feed(b"data: {}\n\n") == b"" and translator.close() == b""
    return _CREATED.sub(b'"created_at":0', _IDS.sub(rb"\1_<id>", out))


def check(raw: bytes) -> None:
    events = decode([raw])
    parsed = [EVENTS.validate_python(orjson.loads(event.data)) for event in events]
    kinds = [event.type for event in parsed]
    assert [event.event for event in events] == kinds
    assert [event.sequence_number for event in parsed] == list(range(len(parsed)))
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ENDS and sum(kinds.count(end) for end in ENDS) == 1


@FUZZ
@given(upstream_bytes(openai_chunks, openai_stream), st.lists(st.integers(0), max_size=8))
def test_chat_to_responses_stream_is_well_formed_whatever_the_upstream_sends(
    raw: bytes, points: list[int]
) -> None:
    def make() -> ChatToResponsesStream:
        return ChatToResponsesStream({}, "m", "resp_1")

    whole = translate(make, [raw])
    assert translate(make, cuts(raw, points)) == whole
    check(whole)


@FUZZ
@given(upstream_bytes(anthropic_events, anthropic_stream), st.lists(st.integers(0), max_size=8))
def test_messages_to_responses_stream_is_well_formed_whatever_the_upstream_sends(
    raw: bytes, points: list[int]
) -> None:
    def make() -> MessagesToResponsesStream:
        return MessagesToResponsesStream({}, "m", "resp_1")

    whole = translate(make, [raw])
    assert translate(make, cuts(raw, points)) == whole
    check(whole)


part = maybe(st.fixed_dictionaries({
    "type": maybe(st.sampled_from(["input_text", "input_image", "output_text", "input_file"])),
    "text": maybe(st.text(max_size=5)), "image_url": maybe(st.text(max_size=5))}))
item = maybe(st.one_of(
    st.fixed_dictionaries({"role": maybe(st.sampled_from(["user", "assistant", "system", "developer"])),
                           "content": maybe(st.text(max_size=5) | st.lists(part, max_size=2))},
                          optional={"type": st.just("message")}),
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": maybe(st.text(max_size=3)),
                           "name": maybe(st.text(max_size=3)), "arguments": maybe(st.text(max_size=5))}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": maybe(st.text(max_size=3)),
                           "output": maybe(st.text(max_size=5) | st.lists(part, max_size=2))}),
    st.fixed_dictionaries({"type": st.just("reasoning"), "summary": json_value}),
    # Codex CLI: custom tool calls and their outputs, tools offered as an input item.
    st.fixed_dictionaries({"type": st.just("custom_tool_call"), "call_id": maybe(st.text(max_size=3)),
                           "name": maybe(st.text(max_size=3)), "input": maybe(st.text(max_size=5))}),
    st.fixed_dictionaries({"type": st.just("custom_tool_call_output"), "call_id": maybe(st.text(max_size=3)),
                           "output": maybe(st.text(max_size=5) | st.lists(part, max_size=2))}),
    st.fixed_dictionaries({"type": st.just("additional_tools"), "tools": maybe(st.lists(maybe(
        st.fixed_dictionaries({
            "type": maybe(st.sampled_from(["function", "custom", "namespace", "web_search"])),
            "name": maybe(st.text(max_size=3)),
            "tools": maybe(st.just([{"type": "custom", "name": "exec"}]))})), max_size=2))}),
))
bodies = st.fixed_dictionaries(
    {"input": maybe(st.text(max_size=5) | st.lists(item, max_size=4))},
    optional={
        "model": maybe(st.text(max_size=5)), "stream": maybe(st.booleans()),
        "instructions": maybe(st.text(max_size=5)),
        "tools": maybe(st.lists(maybe(st.fixed_dictionaries({
            "type": maybe(st.sampled_from(["function", "web_search", "custom"])),
            "name": maybe(st.text(max_size=3)),
            "parameters": maybe(st.just({"type": "object"}))})), max_size=2)),
        "tool_choice": maybe(st.sampled_from(["auto", "none", "required"]) | st.fixed_dictionaries(
            {"type": maybe(st.sampled_from(["function", "file_search"])),
             "name": maybe(st.text(max_size=3))})),
        "text": maybe(st.fixed_dictionaries({"format": maybe(st.fixed_dictionaries({
            "type": maybe(st.sampled_from(["text", "json_schema", "json_object"])),
            "name": maybe(st.text(max_size=3)), "schema": maybe(st.just({"type": "object"}))}))})),
        "temperature": maybe(st.floats(0, 2)), "top_p": maybe(st.floats(0, 1)),
        "max_output_tokens": maybe(st.integers(1, 99)), "metadata": maybe(st.just({"k": "v"})),
        "reasoning": maybe(st.just({"effort": "low"})), "parallel_tool_calls": maybe(st.booleans()),
    },
)


@FUZZ
@given(bodies | json_value)
def test_any_body_is_a_request_or_a_400_and_a_request_always_translates(body: Any) -> None:
    try:
        request = parse(json.dumps(body).encode(), 10)
    except BadRequest as error:
        assert error.param is not None or error.code == "invalid_json"
        return
    items = request.context.items
    for translate_to in (to_chat_request, to_messages_request):
        try:
            out = translate_to(request.payload, items, "m")
        except BadRequest as error:  # hosted tools, and what Anthropic cannot express
            assert error.param
            continue
        orjson.dumps(out)

"""Token counts from whole bodies and from passed-through streams, in any chunk split."""

from __future__ import annotations

import orjson
import pytest

from gateway.usage import UsageScanner, usage_of

OPENAI_STREAM = b"".join([
    b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n',
    *(b'data: {"choices":[{"delta":{"content":"%d"}}],"usage":null}\n\n' % i for i in range(400)),
    b'data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":401}}\n\n',
    b"data: [DONE]\n\n",
])
ANTHROPIC_STREAM = b"".join([
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":30,'
    b'"output_tokens":1}}}\n\n',
    *(b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"w"}}\n\n'
      for _ in range(300)),
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":300}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
])


def scan(stream: bytes, terminator: bytes, size: int) -> UsageScanner:
    scanner = UsageScanner(terminator, b"CUT")
    for at in range(0, len(stream), size):
        chunk = stream[at:at + size]
        assert scanner.feed(chunk) is chunk  # passed on untouched
    return scanner


@pytest.mark.parametrize("size", [1, 7, 100, 4096, 1 << 20])
def test_usage_is_found_at_the_head_and_the_tail_of_a_stream(size: int) -> None:
    openai = scan(OPENAI_STREAM, b"data: [DONE]", size)
    assert openai.usage == {"prompt_tokens": 12, "completion_tokens": 401, "cached_prompt_tokens": 0}
    assert openai.close() == b""
    anthropic = scan(ANTHROPIC_STREAM, b"event: message_stop", size)
    assert anthropic.usage == {"prompt_tokens": 30, "completion_tokens": 300, "cached_prompt_tokens": 0}
    assert anthropic.close() == b""


def test_a_stream_without_its_terminator_was_cut_short() -> None:
    scanner = scan(OPENAI_STREAM[:-len(b"data: [DONE]\n\n")], b"data: [DONE]", 50)
    assert scanner.close() == b"CUT"


def test_a_stream_without_usage_reports_none() -> None:
    assert scan(b"data: {}\n\ndata: [DONE]\n\n", b"data: [DONE]", 3).usage is None


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        ({"usage": {"prompt_tokens": 3, "completion_tokens": 4,
                    "prompt_tokens_details": {"cached_tokens": 2}}},
         {"prompt_tokens": 3, "completion_tokens": 4, "cached_prompt_tokens": 2}),
        ({"usage": {"input_tokens": 5, "output_tokens": 6, "cache_read_input_tokens": 7}},
         {"prompt_tokens": 12, "completion_tokens": 6, "cached_prompt_tokens": 7}),
        # the Responses API: input_tokens already include the cached ones
        ({"object": "response", "usage": {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11,
                                          "input_tokens_details": {"cached_tokens": 4}}},
         {"prompt_tokens": 9, "completion_tokens": 2, "cached_prompt_tokens": 4}),
        ({"usage": {"prompt_tokens": True, "completion_tokens": 2.5}},
         {"prompt_tokens": 0, "completion_tokens": 0, "cached_prompt_tokens": 0}),
        ({"choices": []}, None),
        ([1, 2], None),
    ],
)
def test_usage_of_a_whole_body(body: object, usage: dict[str, int] | None) -> None:
    assert usage_of(orjson.dumps(body)) == usage


def test_usage_of_a_body_that_is_not_json() -> None:
    assert usage_of(b"<html>") is None

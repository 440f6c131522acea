"""The Responses stream translators at the SSE event limit (`upstream.max_sse_event_bytes`):
translated streams end with a 502 in-band wherever the oversized event is found, and a native
provider's own stream is relayed whole even when its final event is past the limit."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

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

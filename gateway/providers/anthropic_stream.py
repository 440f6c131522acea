"""Incremental translation of streams between Anthropic SSE and OpenAI chunk SSE.

Each translator is fed the upstream body as it arrives (any chunk split) and returns the
bytes to write to the client now, possibly ``b""``. ``close()`` at the end of the upstream
body finishes the client stream; ``fail(message)`` ends it with an error event instead
(for a timeout or a broken connection that the pipeline sees). After the end, further
input is ignored, so a translator never writes after its terminating event.

A stream that stops before the upstream said it was complete ends with an error event:
a client must not take a truncated answer for a whole one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.providers.anthropic_wire import (
    anthropic_error_body,
    anthropic_error_type,
    anthropic_stream_error,
    chat_usage,
    completion_id,
    finish_reason,
    json_text,
    message_id,
    messages_usage,
    openai_error_envelope,
    openai_stream_error,
    stop_reason,
    tool_input,
    tool_use_id,
)
from gateway.providers.openai import StreamedCalls
from gateway.sse import EventTooLarge, ServerSentEvent, SSEDecoder, encode_event

__all__ = ["ChatToMessagesStream", "MessagesToChatStream"]

_DONE = b"data: [DONE]\n\n"
_TRUNCATED = "upstream stream ended before the response was complete"
_BAD_EVENT = "upstream sent an event that is not valid JSON"
_BAD_SHAPE = "upstream sent an event of an unexpected shape"


class _StreamTranslator:
    """The parts both directions share: decoding, the end-of-stream rules, robustness."""

    usage: dict[str, int] | None
    first_content_sent: bool

    def __init__(self, max_event_size: int | None = None) -> None:
        self.usage = None
        self.first_content_sent = False
        self._decoder = SSEDecoder(max_event_size)
        self._done = False

    def feed(self, chunk: bytes) -> bytes:
        """Consume one upstream chunk; return the bytes to send to the client now. An SSE line
        or event past `max_event_size` raises BadGateway: the caller stops reading the upstream
        and ends the client's stream with its error event."""
        if self._done:
            return b""
        return self._handle_all(self._decoded(self._decoder.feed, chunk))

    def close(self) -> bytes:
        """The upstream body ended: finish the client stream, with an error if truncated."""
        if self._done:
            return b""
        out = self._handle_all(self._decoded(self._decoder.flush))
        if self._done:
            return out
        if self._answer_complete():  # only the last event was lost; the answer is whole
            return out + self._end()
        return out + self.fail(_TRUNCATED)

    def fail(self, message: str, status: int = 502) -> bytes:
        """End the client stream with an error event (``status`` picks the error type)."""
        raise NotImplementedError

    def _decoded(self, decode: Callable[..., list[ServerSentEvent]], *chunk: bytes) -> list[ServerSentEvent]:
        try:
            return decode(*chunk)
        except EventTooLarge:
            self._done = True  # ended for good: the pipeline tells the client
            raise

    def _handle(self, event: ServerSentEvent) -> bytes:
        raise NotImplementedError

    def _answer_complete(self) -> bool:
        raise NotImplementedError

    def _end(self) -> bytes:
        raise NotImplementedError

    def _handle_all(self, events: list[ServerSentEvent]) -> bytes:
        out = bytearray()
        for event in events:
            try:
                out += self._handle(event)
            except (AttributeError, KeyError, TypeError, ValueError):
                # Valid JSON of an unexpected shape (a list where an object belongs...): the
                # client gets a clean error event rather than a connection cut mid-stream.
                out += self.fail(_BAD_SHAPE)
            if self._done:
                break
        return bytes(out)


class MessagesToChatStream(_StreamTranslator):
    """Anthropic SSE (from the upstream) -> OpenAI ``chat.completion.chunk`` SSE."""

    def __init__(self, model: str, include_usage: bool, *, created: int | None = None,
                 max_event_size: int | None = None) -> None:
        super().__init__(max_event_size)
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id = completion_id(None)
        self._raw_usage: dict[str, Any] = {}
        self._tool_calls: dict[int, int] = {}  # Anthropic block index -> tool_calls index
        self._without_arguments: set[int] = set()  # tool_calls sent no arguments yet
        self._finish_sent = False

    def fail(self, message: str, status: int = 502) -> bytes:
        """End the stream with a final ``{"error": ...}`` chunk and ``[DONE]``."""
        if self._done:
            return b""
        return self._error(openai_error_envelope(anthropic_error_type(status), message))

    def _answer_complete(self) -> bool:
        return self._finish_sent

    def _handle(self, event: ServerSentEvent) -> bytes:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return self.fail(_BAD_EVENT)
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = completion_id(message.get("id"))
            self._add_usage(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            self._add_usage(data.get("usage"))
            self._finish_sent = True
            stop = (data.get("delta") or {}).get("stop_reason")
            return self._chunk({}, finish_reason(stop))
        if kind == "message_stop":
            return self._end()
        if kind == "content_block_stop":
            index = self._tool_calls.get(data.get("index", -1))
            if index is not None and index in self._without_arguments:
                # A call without arguments: "{}", as a whole answer says (clients parse them).
                return self._arguments(index, "{}")
            return b""
        if kind == "error" or event.event == "error":
            return self._error(openai_stream_error(data))
        return b""  # ping, and event types added after this was written

    def _block_start(self, data: dict[str, Any]) -> bytes:
        block = data.get("content_block") or {}
        if block.get("type") == "text" and block.get("text"):
            return self._content(block["text"])
        if block.get("type") != "tool_use":
            return b""  # thinking and server-tool blocks have no Chat Completions form
        index = len(self._tool_calls)
        self._tool_calls[data.get("index", index)] = index
        self._without_arguments.add(index)
        self.first_content_sent = True
        out = self._chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": block.get("id", ""),
                        "type": "function",
                        "function": {"name": block.get("name", ""), "arguments": ""},
                    }
                ]
            }
        )
        if block.get("input"):  # normally {} with the JSON streamed after, but not always
            out += self._arguments(index, json_text(block["input"]))
        return out

    def _delta(self, data: dict[str, Any]) -> bytes:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return self._content(delta["text"])
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = self._tool_calls.get(data.get("index", -1))
            if index is not None:
                return self._arguments(index, delta["partial_json"])
        return b""

    def _content(self, text: str) -> bytes:
        self.first_content_sent = True
        return self._chunk({"content": text})

    def _arguments(self, index: int, arguments: str) -> bytes:
        self._without_arguments.discard(index)
        return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})

    def _add_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # message_delta counts are cumulative: they replace, never add to, earlier ones.
        self._raw_usage.update((k, v) for k, v in usage.items() if v is not None)
        converted = chat_usage(self._raw_usage)
        self.usage = {
            "prompt_tokens": converted["prompt_tokens"],
            "completion_tokens": converted["completion_tokens"],
            "cached_prompt_tokens": converted["prompt_tokens_details"]["cached_tokens"],
        }

    def _end(self) -> bytes:
        out = b"" if self._finish_sent else self._chunk({}, "stop")
        if self._include_usage:
            body = self._envelope([])
            body["usage"] = chat_usage(self._raw_usage)
            out += encode_event(orjson.dumps(body))
        self._done = True
        return out + _DONE

    def _error(self, envelope: dict[str, Any]) -> bytes:
        self._done = True
        return encode_event(orjson.dumps(envelope)) + _DONE

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return encode_event(orjson.dumps(self._envelope([choice])))

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._include_usage:
            body["usage"] = None  # as OpenAI does: null on every chunk but the last
        return body


class ChatToMessagesStream(_StreamTranslator):
    """OpenAI chunk SSE (from an OpenAI-compatible upstream) -> Anthropic SSE events."""

    def __init__(self, model: str, *, max_event_size: int | None = None) -> None:
        super().__init__(max_event_size)
        self._model = model
        self._started = False
        self._open: int | None = None  # Anthropic index of the block being streamed
        self._open_is_text = False
        self._next_index = 0
        self._calls = StreamedCalls()
        # Tool calls as they arrive, by number: (id, name, arguments so far). A call is sent as
        # its tool_use block once whole (before text that follows it, or at the end): servers
        # interleave parallel calls' deltas, which a block stream cannot, and a call's JSON must
        # be checked whole (the SDKs parse it at the block's stop).
        self._pending: dict[int, list[str]] = {}
        self._saw_tools = False
        self._finish: str | None = None
        self._refused = False  # the model declined (OpenAI's `refusal`): Anthropic's stop_reason
        self._raw_usage: dict[str, Any] | None = None

    def fail(self, message: str, status: int = 502) -> bytes:
        """End the stream with an Anthropic ``error`` event."""
        if self._done:
            return b""
        return self._error(anthropic_error_body(status, message))

    def _answer_complete(self) -> bool:
        return self._finish is not None

    def _handle(self, event: ServerSentEvent) -> bytes:
        if event.data.strip() == "[DONE]":
            return self._end()
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return self.fail(_BAD_EVENT)
        if not isinstance(chunk, dict):
            return self.fail(_BAD_EVENT)
        if chunk.get("error") or event.event == "error":
            return self._error(anthropic_stream_error(chunk.get("error", chunk)))
        out = self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self._add_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # n > 1: an Anthropic message has one answer
            delta = choice.get("delta") or {}
            for text, refusal in ((delta.get("content"), False), (delta.get("refusal"), True)):
                if isinstance(text, str) and text:  # a refusal is its text, and the stop reason
                    out += self._tools_whole() + self._text(text)
                    self._refused = self._refused or refusal
            for call in delta.get("tool_calls") or []:
                self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _start(self, chunk: dict[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # OpenAI reports usage only at the end; message_delta carries the real counts.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _text(self, text: str) -> bytes:
        out = b""
        if not self._open_is_text:
            out = self._open_block({"type": "text", "text": ""}, is_text=True)
        self.first_content_sent = True
        delta = {"type": "text_delta", "text": text}
        return out + _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": self._open, "delta": delta},
        )

    def _tool_call(self, call: dict[str, Any]) -> None:
        function = call.get("function") or {}
        entry = self._pending.setdefault(self._calls.number(call), [call.get("id") or tool_use_id(), "", ""])
        if isinstance(function.get("name"), str) and not entry[1]:
            entry[1] = function["name"]
        if isinstance(function.get("arguments"), str):
            entry[2] += function["arguments"]

    def _tools_whole(self) -> bytes:
        """The calls so far, each a whole tool_use block; arguments that are not a JSON object
        go as {"_raw_arguments": ...}, as a whole answer's do."""
        out = b""
        for number in sorted(self._pending):
            call_id, name, arguments = self._pending[number]
            block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
            out += self._open_block(block, is_text=False)
            if arguments.strip():  # none at all: the block's input {} stands
                if tool_input(arguments) is None:
                    arguments = orjson.dumps({"_raw_arguments": arguments}).decode()
                delta = {"type": "input_json_delta", "partial_json": arguments}
                body = {"type": "content_block_delta", "index": self._open, "delta": delta}
                out += _event("content_block_delta", body)
            self.first_content_sent = self._saw_tools = True
        self._pending.clear()
        return out

    def _open_block(self, block: dict[str, Any], *, is_text: bool) -> bytes:
        out = self._close_block()
        self._open = self._next_index
        self._open_is_text = is_text
        self._next_index += 1
        body = {"type": "content_block_start", "index": self._open, "content_block": block}
        return out + _event("content_block_start", body)

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open, self._open_is_text = self._open, None, False
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _add_usage(self, usage: dict[str, Any]) -> None:
        self._raw_usage = usage
        converted = messages_usage(usage)
        cached = converted.get("cache_read_input_tokens", 0)
        self.usage = {
            "prompt_tokens": converted["input_tokens"] + cached,
            "completion_tokens": converted["output_tokens"],
            "cached_prompt_tokens": cached,
        }

    def _end(self) -> bytes:
        out = self._start({}) + self._tools_whole() + self._close_block()
        reason = "refusal" if self._refused else stop_reason(self._finish, saw_tool_call=self._saw_tools)
        body = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": messages_usage(self._raw_usage),
        }
        self._done = True
        return out + _event("message_delta", body) + _event("message_stop", {"type": "message_stop"})

    def _error(self, body: dict[str, Any]) -> bytes:
        self._done = True
        return _event("error", body)


def _event(name: str, body: dict[str, Any]) -> bytes:
    return encode_event(orjson.dumps(body), name)

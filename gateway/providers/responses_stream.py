"""Responses API streams assembled as the upstream stream arrives: from Chat Completions
chunks (`ChatToResponsesStream`), from Anthropic Messages events (`MessagesToResponsesStream`),
and a native Responses stream passed through while watched (`NativeResponsesStream`).

Every translated stream is the full event family, numbered by `sequence_number`:
`response.created`, `response.in_progress`, then per output item `response.output_item.added`
(and for a message `response.content_part.added`), its deltas (`response.output_text.delta`,
`response.function_call_arguments.delta`), their `.done` events and
`response.output_item.done`, and finally `response.completed` (or `response.incomplete` when
the model stopped at max_output_tokens, `response.failed` when the upstream failed or the stream
was cut short). Once the stream ends, `final` holds the finished response object, so the
pipeline can store it before the client sees the end.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.providers.anthropic_wire import finish_reason
from gateway.providers.openai import StreamedCalls
from gateway.providers.responses import (
    function_call_item,
    message_item,
    new_id,
    response_object,
    responses_usage,
    status_of_finish,
    usage_of_chat,
)
from gateway.providers.responses_tools import call_shapes, custom_call_item, custom_input, with_namespace
from gateway.sse import EventTooLarge, ServerSentEvent, SSEDecoder, encode_event
from gateway.usage import counts_of, token_count

logger = logging.getLogger("gateway.responses")

_TRUNCATED = "the upstream ended the stream before the response was complete"
_BAD_SHAPE = "the upstream sent an event of an unexpected shape"


class ResponseEvents:
    """The Responses event sequence for one response, and the response it builds."""

    def __init__(
        self, request: dict[str, Any], response_id: str, model: str,
        items: list[dict[str, Any]] | None = None,
    ) -> None:
        self.request = request
        self.id = response_id
        self.model = model
        self.sequence = 0
        self.items: list[dict[str, Any]] = []  # every output item, by output_index
        self.open: dict[Any, int] = {}  # upstream key (text, a tool call's index) -> output_index
        self.final: dict[str, Any] | None = None  # the finished response, once the stream ends
        self.started = False
        self._out = bytearray()
        self.created = int(time.time())  # one creation time for every snapshot of the response
        # custom and namespaced tools, offered in any turn (`items`): their calls differ
        self.shapes = call_shapes(request, items)
        # A custom tool call's arguments (JSON holding its input) as they arrive: its input is
        # streamed once they are whole.
        self._custom_arguments: dict[int, str] = {}

    def event(self, kind: str, body: dict[str, Any]) -> bytes:
        """Numbers and queues one event (`drain` takes them): an upstream event that turns out
        malformed half-way leaves the events it made queued, so the numbering has no gap."""
        body = {"type": kind, **body, "sequence_number": self.sequence}
        self.sequence += 1
        self._out += encode_event(orjson.dumps(body), event=kind)
        return b""

    def drain(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(
            self.request, self.id, self.model, list(self.items), status, created_at=self.created, **extra)

    def start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        snapshot = self.response("in_progress")
        return self.event("response.created", {"response": snapshot}) + self.event(
            "response.in_progress", {"response": snapshot})

    def _add(self, key: Any, item: dict[str, Any]) -> bytes:
        index = len(self.items)
        self.items.append(item)
        self.open[key] = index
        # A message is announced empty; its part follows in `response.content_part.added`.
        shown = {**item, "content": []} if item["type"] == "message" else item
        return self.start() + self.event("response.output_item.added", {"output_index": index, "item": shown})

    def _message(self, key: Any, part: dict[str, Any]) -> bytes:
        item = message_item("", status="in_progress")
        item["content"] = [part]
        out = self._add(key, item)
        return out + self.event("response.content_part.added", {
            "item_id": item["id"], "output_index": self.open[key], "content_index": 0, "part": dict(part)})

    def text(self, delta: str, key: Any = "text") -> bytes:
        out = b""
        if key not in self.open:
            out = self._message(key, {"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        if not delta:
            return out
        index = self.open[key]
        item = self.items[index]
        item["content"][0]["text"] += delta
        return out + self.event("response.output_text.delta", {
            "item_id": item["id"], "output_index": index, "content_index": 0, "delta": delta,
            "logprobs": []})

    def refusal(self, delta: str, key: Any = "refusal") -> bytes:
        """The model declined: a message whose part is a `refusal`, as a whole answer's is."""
        out = b""
        if key not in self.open:
            out = self._message(key, {"type": "refusal", "refusal": ""})
        index = self.open[key]
        item = self.items[index]
        item["content"][0]["refusal"] += delta
        return out + self.event("response.refusal.delta", {
            "item_id": item["id"], "output_index": index, "content_index": 0, "delta": delta})

    def call(self, key: Any, call_id: str, name: str) -> bytes:
        if key in self.open:
            return b""
        if name not in self.shapes:
            return self._add(key, function_call_item(call_id, name, "", status="in_progress"))
        if self.shapes[name][0]:
            out = self._add(key, with_namespace(custom_call_item(call_id, name, "", status="in_progress"),
                                                self.shapes))
            self._custom_arguments[self.open[key]] = ""
            return out
        return self._add(key, with_namespace(function_call_item(call_id, name, "", status="in_progress"),
                                             self.shapes))

    def arguments(self, key: Any, delta: str) -> bytes:
        index = self.open.get(key)
        if index is None or not delta:
            return b""
        item = self.items[index]
        if index in self._custom_arguments:
            self._custom_arguments[index] += delta
            return b""
        item["arguments"] += delta
        return self.event("response.function_call_arguments.delta", {
            "item_id": item["id"], "output_index": index, "delta": delta})

    def close(self, key: Any, status: str = "completed") -> bytes:
        """Ends an item: `incomplete` when the model stopped in it (at max_output_tokens)."""
        index = self.open.pop(key, None)
        if index is None:
            return b""
        item = self.items[index]
        item["status"] = status
        out = b""
        if item["type"] == "message":
            part = item["content"][0]
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            if part["type"] == "refusal":
                out += self.event("response.refusal.done", {**common, "refusal": part["refusal"]})
            else:
                done = {**common, "text": part["text"], "logprobs": []}
                out += self.event("response.output_text.done", done)
            out += self.event("response.content_part.done", {**common, "part": part})
        elif item["type"] == "custom_tool_call":
            item["input"] = custom_input(self._custom_arguments.pop(index, ""))
            common = {"item_id": item["id"], "output_index": index}
            if item["input"]:
                out += self.event("response.custom_tool_call_input.delta", {**common, "delta": item["input"]})
            out += self.event("response.custom_tool_call_input.done", {**common, "input": item["input"]})
        else:
            if not item["arguments"]:  # a call with no arguments: its deltas still add up to them
                item["arguments"] = "{}"
                out += self.event("response.function_call_arguments.delta", {
                    "item_id": item["id"], "output_index": index, "delta": "{}"})
            out += self.event("response.function_call_arguments.done", {
                "item_id": item["id"], "output_index": index, "name": item["name"],
                "arguments": item["arguments"]})
        return out + self.event("response.output_item.done", {"output_index": index, "item": item})

    def finish(self, finish_reason: str | None, usage: dict[str, Any] | None) -> bytes:
        out = self.start()
        status, incomplete = status_of_finish(finish_reason)
        keys = sorted(self.open, key=self.open.__getitem__)
        for key in keys:  # cut short: the model stopped in the last item, not in the others
            out += self.close(key, status if key == keys[-1] else "completed")
        self.final = self.response(status, usage=usage, incomplete=incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self.event(kind, {"response": self.final})

    def failed(self, code: str, message: str) -> bytes:
        """The response failed mid-way: `response.failed` (not stored)."""
        out = self.start()
        for index in self.open.values():
            self.items[index]["status"] = "incomplete"
        self.open.clear()
        # The Responses API knows a fixed set of error codes; the upstream's own goes in the message.
        known = "rate_limit_exceeded" if "rate" in code else "server_error"
        failed = self.response("failed", error={"code": known, "message": f"{code}: {message}"})
        self.final = None
        return out + self.event("response.failed", {"response": failed})


class _Assembler:
    """Decoding, the end-of-stream rules, and robustness, for both upstream shapes."""

    def __init__(
        self, request: dict[str, Any], model: str, response_id: str | None = None,
        max_event_size: int | None = None, items: list[dict[str, Any]] | None = None,
    ) -> None:
        self.events = ResponseEvents(request, response_id or new_id("resp"), model, items)
        self.usage: dict[str, int] | None = None
        self._decoder = SSEDecoder(max_event_size)
        self._done = False

    @property
    def final(self) -> dict[str, Any] | None:
        return self.events.final

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""
        self._handle_all(self._decoder.feed(chunk))  # EventTooLarge: the pipeline calls `fail_with`
        return self.events.drain()

    def close(self) -> bytes:
        if self._done:
            return b""
        self._handle_all(self._decoder.flush())
        if not self._done:
            self._done = True
            self.events.failed("upstream_stream_incomplete", _TRUNCATED)
        return self.events.drain()

    def fail_with(self, error: GatewayError) -> bytes:
        """The pipeline lost the upstream mid-stream (a timeout, a reset): end it in-band."""
        if self._done:
            return b""
        self._done = True
        self.events.failed(error.code or "upstream_error", error.message)
        return self.events.drain()

    def _handle_all(self, events: list[ServerSentEvent]) -> None:
        for event in events:
            try:
                self._handle(event)
            except (AttributeError, KeyError, TypeError, ValueError, IndexError):
                self._done = True
                self.events.failed("upstream_bad_response", _BAD_SHAPE)
            if self._done:
                break

    def _handle(self, event: ServerSentEvent) -> bytes:
        raise NotImplementedError

    def _finish(self, finish_reason: str | None, usage: dict[str, Any] | None) -> bytes:
        self._done = True
        if usage is not None:
            self.usage = counts_of(usage)
        return self.events.finish(finish_reason, usage)


class ChatToResponsesStream(_Assembler):
    """Chat Completions chunks -> Responses events."""

    def __init__(
        self, request: dict[str, Any], model: str, response_id: str | None = None,
        max_event_size: int | None = None, items: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(request, model, response_id, max_event_size, items)
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._calls = StreamedCalls()

    def _handle(self, event: ServerSentEvent) -> bytes:
        data = event.data.strip()
        if data == "[DONE]":
            return self._end()
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            raise TypeError("a chunk must be an object")
        if isinstance(chunk.get("error"), dict):
            self._done = True
            error = chunk["error"]
            return self.events.failed(str(error.get("code") or "upstream_error"), str(error.get("message")))
        out = self.events.start()
        if chunk.get("usage") is not None:
            self._usage = usage_of_chat(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self.events.text(content)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                out += self.events.refusal(refusal)
            for call in delta.get("tool_calls") or ():
                key = ("call", self._calls.number(call))
                function = call.get("function") or {}
                call_id = _text(call.get("id")) or new_id("call")
                out += self.events.call(key, call_id, _text(function.get("name")))
                out += self.events.arguments(key, function.get("arguments") or "")
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return out

    def _end(self) -> bytes:
        return self._finish(self._finish_reason, self._usage)

    def close(self) -> bytes:
        # A server that never sends [DONE] but did finish: the answer is whole.
        if not self._done and self._finish_reason is not None:
            self._handle_all(self._decoder.flush())
            if not self._done:
                self._end()
            return self.events.drain()
        return super().close()


class MessagesToResponsesStream(_Assembler):
    """Anthropic Messages events -> Responses events."""

    def __init__(
        self, request: dict[str, Any], model: str, response_id: str | None = None,
        max_event_size: int | None = None, items: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(request, model, response_id, max_event_size, items)
        self._input = {"input_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        self._output_tokens = 0
        self._stop: str | None = None
        # A block Anthropic stopped, ended only at the next one or at the message's end: only
        # then is it known whether the model stopped in it (max_tokens: its item is incomplete).
        self._stopped: Any = None

    def _handle(self, event: ServerSentEvent) -> bytes:
        data = orjson.loads(event.data)
        if not isinstance(data, dict):
            raise TypeError("an event must be an object")
        kind = data.get("type") or event.event
        key: Any = ("block", data.get("index", 0))
        if kind == "content_block_start" and self._stopped is not None:
            out, self._stopped = self.events.close(self._stopped), None
            return out + self._handle(event)
        if kind == "message_start":
            usage = data["message"].get("usage") or {}
            for key in self._input:
                self._input[key] = max(self._input[key], token_count(usage.get(key)))
            self._output_tokens = token_count(usage.get("output_tokens"))
            return self.events.start()
        if kind == "content_block_start":
            block = data["content_block"]
            if block.get("type") == "text":
                return self.events.text(block.get("text") or "", key)
            if block.get("type") == "tool_use":
                call_id = _text(block.get("id")) or new_id("call")
                return self.events.call(key, call_id, _text(block.get("name")))
            return b""  # thinking and server-tool blocks have no Responses equivalent here
        if kind == "content_block_delta":
            delta = data["delta"]
            if delta.get("type") == "text_delta" and key in self.events.open:
                return self.events.text(delta.get("text") or "", key)
            if delta.get("type") == "input_json_delta":
                return self.events.arguments(key, delta.get("partial_json") or "")
            return b""
        if kind == "content_block_stop":
            self._stopped = key  # `finish` ends it with the others, else the next block's start
            return b""
        if kind == "message_delta":
            self._stop = (data.get("delta") or {}).get("stop_reason") or self._stop
            usage = data.get("usage") or {}
            self._output_tokens = max(self._output_tokens, token_count(usage.get("output_tokens")))
            for key in self._input:
                self._input[key] = max(self._input[key], token_count(usage.get(key)))
            return b""
        if kind == "message_stop":
            prompt = sum(self._input.values())
            usage = responses_usage(prompt, self._output_tokens, self._input["cache_read_input_tokens"],
                                    written=self._input["cache_creation_input_tokens"])
            return self._finish(finish_reason(self._stop), usage)
        if kind == "error":
            self._done = True
            error = data.get("error") or {}
            return self.events.failed(str(error.get("type") or "upstream_error"), str(error.get("message")))
        return b""  # ping and events added later


def _text(value: Any) -> str:
    """A name or an id from the upstream: a string, or (of another type) nothing."""
    return value if isinstance(value, str) else ""



class NativeResponsesStream:
    """A provider's own Responses stream, passed through unchanged; the finished response is
    picked out of its last event (for the gateway's record) and its usage counted."""

    def __init__(self, max_event_size: int | None = None) -> None:
        # The stream is relayed as it comes; only the decoder that watches it for the final
        # response (to keep it) holds an event, and never one past the limit.
        self._decoder: SSEDecoder | None = SSEDecoder(max_event_size)
        self.final: dict[str, Any] | None = None
        self.usage: dict[str, int] | None = None
        self._ended = False

    def feed(self, chunk: bytes) -> bytes:
        if self._decoder is not None:
            try:
                events = self._decoder.feed(chunk)
            except EventTooLarge:
                self._stop_watching()
                return chunk
            for event in events:
                self._watch(event)
        return chunk

    def _stop_watching(self) -> None:
        """An event past the limit (a long answer's `response.completed` holds all of it): the
        stream still goes to the client as it came, but is neither watched nor kept."""
        self._decoder = None
        self._ended = True  # the provider's own stream: whether it ended is its to say
        logger.warning("a native Responses stream held an event past upstream.max_sse_event_bytes: "
                       "relayed, but not kept for previous_response_id")

    def _watch(self, event: ServerSentEvent) -> None:
        ends = ("response.completed", "response.incomplete", "response.failed", "error")
        if event.event not in ends and (event.event is not None or '"response.' not in event.data[:80]):
            return
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        kind = data.get("type") if isinstance(data, dict) else None
        if kind in ("response.failed", "error"):
            self._ended = True
        if kind in ("response.completed", "response.incomplete") and isinstance(data.get("response"), dict):
            self._ended = True
            self.final = data["response"]
            usage = self.final.get("usage")
            self.usage = counts_of(usage if isinstance(usage, dict) else {})

    def close(self) -> bytes:
        if self._decoder is not None:
            try:
                events = self._decoder.flush()
            except EventTooLarge:
                events = []
                self._stop_watching()
            for event in events:
                self._watch(event)
        if self._ended:
            return b""
        body = {"type": "error", "code": "upstream_stream_incomplete", "message": _TRUNCATED, "param": None,
                "sequence_number": 0}
        return encode_event(orjson.dumps(body), event="error")

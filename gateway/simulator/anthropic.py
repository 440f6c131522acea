"""The Anthropic Messages wire format, as the simulator speaks it."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.content import text_of
from gateway.simulator.agent import (
    BadRequest,
    Conversation,
    JsonObject,
    Reply,
    Tool,
    ToolResult,
)
from gateway.simulator.wire import (
    Api,
    StreamEvents,
    optional_int,
    optional_list,
    require_messages,
    require_object,
    require_str,
    sse,
)

_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def parse(raw: Any, digest: str) -> Conversation:
    body = require_object(raw)
    model = require_str(body, "model")
    messages = require_messages(body)
    max_tokens = optional_int(body, "max_tokens")
    if max_tokens is None:
        raise BadRequest("max_tokens: Field required", "max_tokens")
    tools = tuple(_tool(i, t) for i, t in enumerate(optional_list(body, "tools")))
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "none":
        tools = ()
    chars = len(text_of(body.get("system")))
    calls: list[tuple[str, JsonObject]] = []
    results: list[ToolResult] = []
    names: dict[str, str] = {}  # tool_use id -> tool name, to label the results
    for message in messages:
        content = message.get("content")
        chars += len(text_of(content))
        for block in content if isinstance(content, list) else ():
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "tool_use" and isinstance(block.get("name"), str):
                arguments = block.get("input")
                arguments = arguments if isinstance(arguments, dict) else {}
                chars += len(orjson.dumps(arguments))
                calls.append((block["name"], arguments))
                if isinstance(block.get("id"), str):
                    names[block["id"]] = block["name"]
            elif kind == "tool_result":
                text = text_of(block.get("content"))
                chars += len(text)
                used = block.get("tool_use_id")
                results.append(ToolResult(names.get(used, "tool") if isinstance(used, str) else "tool", text))
    return Conversation(
        model=model,
        stream=body.get("stream") is True,
        max_tokens=max_tokens,
        tools=tools,
        calls_made=tuple(calls),
        tool_results=tuple(results),
        prompt_chars=chars,
        digest=digest,
    )


def _tool(index: int, tool: Any) -> Tool:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise BadRequest(f"tools.{index}.name: Field required", "tools")
    schema = tool.get("input_schema")
    return Tool(tool["name"], schema if isinstance(schema, dict) else {})


def render(conversation: Conversation, reply: Reply, created: int) -> bytes:
    return orjson.dumps(
        {
            **_message(conversation),
            "content": [_block(conversation, reply, full=True)],
            "stop_reason": _stop_reason(reply),
            "usage": {**_input_usage(conversation), "output_tokens": len(reply.tokens)},
        }
    )


def stream(conversation: Conversation, reply: Reply, created: int) -> StreamEvents:
    start = {
        **_message(conversation),
        "content": [],
        "stop_reason": None,
        "usage": {**_input_usage(conversation), "output_tokens": 1},
    }
    events: StreamEvents = [
        (0, sse({"type": "message_start", "message": start}, "message_start")),
        (
            0,
            _event(
                "content_block_start",
                index=0,
                content_block=_block(conversation, reply, full=False),
            ),
        ),
        (0, _event("ping")),
    ]
    for i, token in enumerate(reply.tokens):
        if reply.tool_call is None:
            delta = {"type": "text_delta", "text": token}
        else:
            delta = {"type": "input_json_delta", "partial_json": token}
        events.append((i, _event("content_block_delta", index=0, delta=delta)))
    last = max(len(reply.tokens) - 1, 0)
    stop = {"stop_reason": _stop_reason(reply), "stop_sequence": None}
    events += [
        (last, _event("content_block_stop", index=0)),
        (last, _event("message_delta", delta=stop, usage={"output_tokens": len(reply.tokens)})),
        (last, _event("message_stop")),
    ]
    return events


def error(status: int, message: str, param: str | None = None) -> bytes:
    kind = _ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def _input_usage(conversation: Conversation) -> JsonObject:
    """Anthropic counts cache reads apart from `input_tokens`."""
    cached = conversation.cached_tokens
    return {"input_tokens": conversation.prompt_tokens - cached, "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0}


def count_tokens(raw: Any) -> bytes:
    """POST /v1/messages/count_tokens: the prompt tokens `parse` would count (no max_tokens)."""
    body = require_object(raw)
    conversation = parse({**body, "max_tokens": 1}, "count")
    return orjson.dumps({"input_tokens": conversation.prompt_tokens})


def _event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, kind)


def _message(conversation: Conversation) -> JsonObject:
    return {
        "id": f"msg_{conversation.digest}",
        "type": "message",
        "role": "assistant",
        "model": conversation.model,
        "stop_sequence": None,
    }


def _block(conversation: Conversation, reply: Reply, *, full: bool) -> JsonObject:
    """The content block; `full=False` is its empty start, filled in by the deltas."""
    call = reply.tool_call
    if call is None:
        return {"type": "text", "text": reply.text if full else ""}
    return {
        "type": "tool_use",
        "id": f"toolu_{conversation.digest}",
        "name": call.name,
        "input": call.arguments if full else {},
    }


def _stop_reason(reply: Reply) -> str:
    if reply.tool_call is not None:
        return "tool_use"
    return "max_tokens" if reply.truncated else "end_turn"


API = Api(parse=parse, render=render, stream=stream, error=error)

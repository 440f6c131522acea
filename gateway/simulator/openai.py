"""The OpenAI Chat Completions wire format, as the simulator speaks it."""

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
    load_arguments,
    optional_int,
    optional_list,
    require_messages,
    require_object,
    require_str,
    sse,
)

_FINGERPRINT = "fp_simulator"
# status -> (type, code), as the real API reports them
_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def parse(raw: Any, digest: str) -> Conversation:
    body = require_object(raw)
    model = require_str(body, "model")
    messages = require_messages(body)
    max_tokens = optional_int(body, "max_completion_tokens") or optional_int(body, "max_tokens")
    tools = tuple(_tool(i, t) for i, t in enumerate(optional_list(body, "tools")))
    if body.get("tool_choice") == "none":
        tools = ()
    chars = 0
    calls: list[tuple[str, JsonObject]] = []
    results: list[ToolResult] = []
    names: dict[str, str] = {}  # tool_call_id -> tool name, to label the results
    for index, message in enumerate(messages):
        chars += len(text_of(message.get("content")))
        if message["role"] == "assistant":
            tool_calls = message.get("tool_calls")
            if tool_calls is not None and not isinstance(tool_calls, list):
                raise BadRequest(f"messages[{index}].tool_calls: an array is required", "messages")
            for call in tool_calls or ():
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    continue
                raw_arguments = function.get("arguments")
                chars += len(raw_arguments) if isinstance(raw_arguments, str) else 0
                calls.append((function["name"], load_arguments(raw_arguments)))
                if isinstance(call.get("id"), str):
                    names[call["id"]] = function["name"]
        elif message["role"] == "tool":
            called = message.get("tool_call_id")
            name = names.get(called, "tool") if isinstance(called, str) else "tool"
            results.append(ToolResult(name, text_of(message.get("content"))))
    options = body.get("stream_options")
    return Conversation(
        model=model,
        stream=body.get("stream") is True,
        max_tokens=max_tokens,
        tools=tools,
        calls_made=tuple(calls),
        tool_results=tuple(results),
        prompt_chars=chars,
        digest=digest,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
    )


def _tool(index: int, tool: Any) -> Tool:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest(f"tools[{index}].function.name: a string is required", "tools")
    parameters = function.get("parameters")
    return Tool(function["name"], parameters if isinstance(parameters, dict) else {})


def render(conversation: Conversation, reply: Reply, created: int) -> bytes:
    call = reply.tool_call
    message: JsonObject = {
        "role": "assistant",
        "content": None if call else reply.text,
        "refusal": None,
        "annotations": [],
    }
    if call is not None:
        message["tool_calls"] = [
            {
                "id": f"call_{conversation.digest}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
        ]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(reply)}
    return orjson.dumps(
        {
            "id": f"chatcmpl-{conversation.digest}",
            "object": "chat.completion",
            "created": created,
            "model": conversation.model,
            "choices": [choice],
            "usage": _usage(conversation, reply),
            "system_fingerprint": _FINGERPRINT,
        }
    )


def stream(conversation: Conversation, reply: Reply, created: int) -> StreamEvents:
    base: JsonObject = {
        "id": f"chatcmpl-{conversation.digest}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": conversation.model,
        "system_fingerprint": _FINGERPRINT,
    }
    if conversation.include_usage:
        base["usage"] = None  # as the real API: null on every chunk but the last

    def chunk(delta: JsonObject, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**base, "choices": [choice]})

    call = reply.tool_call
    events: StreamEvents = [(0, chunk({"role": "assistant", "content": None if call else ""}))]
    if call is None:
        events += [(i, chunk({"content": token})) for i, token in enumerate(reply.tokens)]
    else:
        head = {"index": 0, "id": f"call_{conversation.digest}", "type": "function"}
        head["function"] = {"name": call.name, "arguments": ""}
        events.append((0, chunk({"tool_calls": [head]})))
        events += [
            (i, chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            for i, piece in enumerate(reply.tokens)
        ]
    last = max(len(reply.tokens) - 1, 0)
    events.append((last, chunk({}, _finish(reply))))
    if conversation.include_usage:
        events.append((last, sse({**base, "choices": [], "usage": _usage(conversation, reply)})))
    events.append((last, b"data: [DONE]\n\n"))
    return events


def error(status: int, message: str, param: str | None = None) -> bytes:
    kind, code = _ERRORS.get(
        status, ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    )
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def _finish(reply: Reply) -> str:
    if reply.tool_call is not None:
        return "tool_calls"
    return "length" if reply.truncated else "stop"


def _usage(conversation: Conversation, reply: Reply) -> JsonObject:
    prompt, completion = conversation.prompt_tokens, len(reply.tokens)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": conversation.cached_tokens},
    }


API = Api(parse=parse, render=render, stream=stream, error=error)

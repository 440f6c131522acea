"""Pieces shared by the request, response and stream translators between the two API shapes."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from gateway.errors import BadRequest

# Anthropic stop_reason -> OpenAI finish_reason.
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# OpenAI finish_reason -> Anthropic stop_reason.
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class TranslationError(BadRequest):
    """The request uses something the other API shape cannot express (a 400 for the client)."""


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def stop_reason(finish: str | None, *, saw_tool_call: bool = False) -> str:
    # Several OpenAI-compatible servers say "stop" after a tool call, but Anthropic clients
    # run their tools only on "tool_use".
    if saw_tool_call and finish != "length":
        return "tool_use"
    return STOP_REASONS.get(finish or "stop", "end_turn")


def chat_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage. Anthropic counts cached input apart; OpenAI does not."""
    usage = usage or {}
    cache_read = _int(usage.get("cache_read_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + _int(usage.get("cache_creation_input_tokens")) + cache_read
    completion = _int(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def messages_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI usage -> Anthropic usage; cached prompt tokens become cache reads."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    prompt = _int(usage.get("prompt_tokens"))
    out = {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": _int(usage.get("completion_tokens")),
    }
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def tool_input(arguments: Any) -> dict[str, Any] | None:
    """OpenAI tool-call arguments (a JSON string) -> an Anthropic input object, or None."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if not isinstance(arguments, str):
        return None
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def tool_call_of(block: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic `tool_use` block as an OpenAI tool call (arguments as a JSON string)."""
    return {
        "id": block.get("id", ""),
        "type": "function",
        "function": {"name": block.get("name", ""), "arguments": json_text(block.get("input") or {})},
    }


def text_of(content: Any) -> str:
    """Flatten a string or a list of text parts/blocks (OpenAI or Anthropic) to plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return str(content)


def message_id(chat_id: Any) -> str:
    if isinstance(chat_id, str) and chat_id:
        if chat_id.startswith("msg_"):
            return chat_id
        return "msg_" + chat_id.removeprefix("chatcmpl-")
    return "msg_" + uuid.uuid4().hex


def completion_id(msg_id: Any) -> str:
    if isinstance(msg_id, str) and msg_id:
        return "chatcmpl-" + msg_id.removeprefix("msg_")
    return "chatcmpl-" + uuid.uuid4().hex


def tool_use_id() -> str:
    """An id for a tool call the upstream sent without one; clients need it to answer."""
    return "toolu_" + uuid.uuid4().hex[:24]

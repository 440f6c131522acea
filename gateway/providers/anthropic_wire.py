"""The Anthropic Messages wire vocabulary shared by the translators in both directions and
their streams: stop reasons, usage, ids, tool calls, and error bodies.

Anthropic errors: ``{"type": "error", "error": {"type": "rate_limit_error", "message": "..."}}``;
OpenAI's: ``{"error": {"message": "...", "type": "...", "param": null, "code": null}}``.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from gateway.config import ModelProvider
from gateway.errors import BadRequest
from gateway.usage import counts_of

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
    counts = counts_of(usage or {})
    prompt, completion = counts["prompt_tokens"], counts["completion_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": counts["cached_prompt_tokens"]},
    }


def messages_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI usage -> Anthropic usage; cached prompt tokens become cache reads."""
    counts = counts_of(usage or {})
    cached = counts["cached_prompt_tokens"]
    out = {
        "input_tokens": max(counts["prompt_tokens"] - cached, 0),
        "output_tokens": counts["completion_tokens"],
    }
    if cached:
        out["cache_read_input_tokens"] = cached
    return out



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

# Status -> Anthropic error type, as documented at docs.anthropic.com/en/api/errors (and
# 402/504 as the anthropic SDK's error objects name them).
_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# Anthropic error type -> OpenAI error type (the names gateway/errors.py uses too).
_OPENAI_TYPES: dict[str, str] = {
    "invalid_request_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication_error": "authentication_error",
    "billing_error": "insufficient_quota",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "timeout_error": "timeout_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
}



def anthropic_error_type(status: int) -> str:
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    # The documented fallback: other 4xx are invalid requests; anything else is Anthropic's.
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}


def openai_error_envelope(anthropic_type: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _OPENAI_TYPES.get(anthropic_type, "server_error"),
            "param": None,
            "code": anthropic_type,
        }
    }


def openai_error_message(body: bytes | dict[str, Any]) -> str | None:
    """The message in an OpenAI-style error, in the shapes compatible servers really send."""
    try:
        parsed = orjson.loads(body) if isinstance(body, bytes) else body
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    error = parsed.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message: str = error["message"]
        return message
    if isinstance(error, str):  # Ollama and some proxies: {"error": "..."}
        return error
    for key in ("message", "detail"):  # {"message": ...}; FastAPI servers: {"detail": ...}
        value = parsed.get(key)
        if isinstance(value, str):
            return value
    return None


# An OpenAI error's `type` (or string `code`) -> the status it stands for, so an Anthropic
# client's retry logic still tells a rate limit from a bad request.
_STATUS_OF_OPENAI_TYPE = {
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
    "not_found_error": 404, "rate_limit_error": 429, "rate_limit_exceeded": 429,
    "insufficient_quota": 429, "overloaded_error": 529, "server_error": 500, "timeout_error": 504,
}


def anthropic_stream_error(error: Any) -> dict[str, Any]:
    """The ``error`` member of an OpenAI stream chunk -> an Anthropic ``error`` event body."""
    message = openai_error_message({"error": error}) or "upstream error"
    status: Any = None
    if isinstance(error, dict):
        status = error.get("code")
        if not isinstance(status, int):
            named = _STATUS_OF_OPENAI_TYPE.get(str(error.get("type")))
            status = named or _STATUS_OF_OPENAI_TYPE.get(str(status))
    return anthropic_error_body(status if isinstance(status, int) else 500, message)


def openai_stream_error(event: Any) -> dict[str, Any]:
    """An Anthropic ``error`` event body -> the OpenAI envelope sent as a final stream chunk."""
    error = event.get("error") if isinstance(event, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = error.get("type")
        message: str = error["message"]
        return openai_error_envelope(kind if isinstance(kind, str) else "api_error", message)
    return openai_error_envelope("api_error", "upstream stream error")


ANTHROPIC_VERSION = "2023-06-01"


def request_headers(provider: ModelProvider) -> dict[str, str]:
    """What every request to an Anthropic provider carries: the API version and the key."""
    headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
    if provider.access_key:
        headers["x-api-key"] = provider.access_key
    return headers

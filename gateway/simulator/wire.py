"""What the two API modules share: their interface, SSE framing and field checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.simulator.agent import BadRequest, Conversation, JsonObject, Reply

# (token index whose deadline the bytes wait for, bytes): the app paces these
StreamEvents = list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class Api:
    """One wire format: parse a request, render a reply or an error in its shape."""

    parse: Callable[[Any, str], Conversation]
    render: Callable[[Conversation, Reply, int], bytes]
    stream: Callable[[Conversation, Reply, int], StreamEvents]
    error: Callable[[int, str, str | None], bytes]


def sse(data: JsonObject, event: str | None = None) -> bytes:
    body = b"data: " + orjson.dumps(data) + b"\n\n"
    return body if event is None else b"event: " + event.encode() + b"\n" + body


def require_object(body: Any) -> JsonObject:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def require_str(body: JsonObject, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key}: a non-empty string is required", key)
    return value


def require_messages(body: JsonObject) -> list[JsonObject]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty array is required", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}]: an object with a role is required", "messages")
    return messages


def optional_int(body: JsonObject, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"{key}: a positive integer is required", key)
    return value


def optional_list(body: JsonObject, key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{key}: an array is required", key)
    return value


def load_arguments(raw: Any) -> JsonObject:
    """Tool-call arguments as sent back by a client: a JSON string (OpenAI) or an object."""
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw) if isinstance(raw, str | bytes) else None
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}

"""Validating client requests of both APIs and reading their conversation as turns of text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import BadRequest
from gateway.providers.anthropic_common import text_of
from gateway.routing import Turn

OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
ANTHROPIC_ROLES = frozenset({"user", "assistant"})
# Model names that mean "let the gateway choose".
AUTO_MODELS = frozenset({"", "auto", "router"})


@dataclass(frozen=True, slots=True)
class ChatRequest:
    raw: bytes
    payload: dict[str, Any]
    requested_model: str | None
    stream: bool
    include_usage: bool
    turns: list[Turn]


def load_json(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return payload


def _common(payload: dict[str, Any], max_messages: int) -> tuple[list[Any], str | None, bool]:
    messages = payload.get("messages")
    if messages is None:
        raise BadRequest("'messages' is required", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages", code="invalid_type")
    if len(messages) > max_messages:
        raise BadRequest(
            f"'messages' has {len(messages)} entries; the limit is {max_messages}",
            param="messages", code="too_many_messages",
        )
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string", param="model", code="invalid_type")
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream", code="invalid_type")
    requested = None if model is None or model in AUTO_MODELS else model
    return messages, requested, stream


def parse_chat(raw: bytes, max_messages: int) -> ChatRequest:
    """An OpenAI Chat Completions request."""
    payload = load_json(raw)
    messages, requested, stream = _common(payload, max_messages)
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not _role_in(message, OPENAI_ROLES):
            raise BadRequest(
                f"messages[{index}] must be an object with a role of "
                "system, developer, user, assistant or tool",
                param=f"messages[{index}].role", code="invalid_value",
            )
        role = "tool" if message["role"] == "function" else message["role"]
        turns.append(Turn(role, text_of(message.get("content"))))
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(raw, payload, requested, stream, include_usage, turns)


def parse_messages(raw: bytes, max_messages: int) -> ChatRequest:
    """An Anthropic Messages request (`tool_result` blocks count as tool turns)."""
    payload = load_json(raw)
    messages, requested, stream = _common(payload, max_messages)
    turns = []
    if payload.get("system"):
        turns.append(Turn("system", _anthropic_text(payload["system"])))
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not _role_in(message, ANTHROPIC_ROLES):
            raise BadRequest(
                f"messages[{index}] must be an object with a role of user or assistant",
                param=f"messages[{index}].role", code="invalid_value",
            )
        content = message.get("content")
        if message["role"] == "user" and isinstance(content, list):
            results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            for block in results:
                turns.append(Turn("tool", _anthropic_text(block.get("content"))))
            rest = [b for b in content if b not in results]
            if rest or not results:
                turns.append(Turn("user", _anthropic_text(rest)))
            continue
        turns.append(Turn(message["role"], _anthropic_text(content)))
    return ChatRequest(raw, payload, requested, stream, True, turns)


def _role_in(message: dict[str, Any], roles: frozenset[str]) -> bool:
    role = message.get("role")
    return isinstance(role, str) and role in roles


def _anthropic_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for block in content:
            if isinstance(block, dict):
                if isinstance(block.get("text"), str):
                    texts.append(block["text"])
                elif block.get("type") == "tool_result":
                    texts.append(_anthropic_text(block.get("content")))
        return " ".join(texts)
    return ""

"""Anthropic-SDK clients served by OpenAI-compatible upstreams.

``messages_to_chat_request`` turns an inbound Anthropic Messages request into a Chat
Completions request; ``chat_to_messages_response`` turns the upstream's answer back into an
Anthropic message. Pure functions; ``TranslationError`` (a 400) for what cannot be expressed.
"""

from __future__ import annotations

from typing import Any

from gateway.providers.anthropic_common import (
    TranslationError,
    message_id,
    messages_usage,
    stop_reason,
    text_of,
    tool_call_of,
    tool_input,
    tool_use_id,
)

_TOOL_CHOICES: dict[str, str] = {"auto": "auto", "any": "required", "none": "none"}


def messages_to_chat_request(
    msg: dict[str, Any], model_id: str, *, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """An Anthropic Messages request -> an OpenAI Chat Completions request for ``model_id``.

    ``max_tokens_field`` lets the caller send ``max_completion_tokens`` to OpenAI models
    that refuse ``max_tokens``; most compatible servers only know ``max_tokens``.
    """
    messages = msg.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list", param="messages")
    out_messages: list[dict[str, Any]] = []
    system = text_of(msg.get("system"))
    if system:
        out_messages.append({"role": "system", "content": system})
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            out_messages.extend(_user_messages(message.get("content"), where))
        elif role == "assistant":
            assistant = _assistant_message(message.get("content"), where)
            if assistant is not None:
                out_messages.append(assistant)
        else:
            raise TranslationError(f"{where}.role {role!r} is not supported", param=where)

    out: dict[str, Any] = {"model": model_id, "messages": out_messages}
    if isinstance(msg.get("max_tokens"), int):
        out[max_tokens_field] = msg["max_tokens"]
    if msg.get("stop_sequences"):
        out["stop"] = list(msg["stop_sequences"])
    for key in ("temperature", "top_p"):
        if isinstance(msg.get(key), int | float):
            out[key] = msg[key]
    if msg.get("stream"):
        # Without include_usage an OpenAI stream carries no token counts at all.
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = msg.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    _add_tools(msg, out)
    return out


def chat_to_messages_response(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` -> an Anthropic message reporting ``model``."""
    choices = chat.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = text_of(message.get("content")) or message.get("refusal") or ""
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        parsed = tool_input(arguments)
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or tool_use_id(),
                "name": function.get("name", ""),
                # A model that wrote invalid JSON: keep its text where the client can see it.
                "input": parsed if parsed is not None else {"_raw_arguments": arguments},
            }
        )
    saw_tool_call = any(block["type"] == "tool_use" for block in content)
    return {
        "id": message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), saw_tool_call=saw_tool_call),
        "stop_sequence": None,
        "usage": messages_usage(chat.get("usage")),
    }


def _user_messages(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or a list", param=where)
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _source_url(block, here)}})
        elif kind == "document":
            parts.append({"type": "file", "file": {"file_data": _source_url(block, here)}})
        elif kind == "tool_result":
            # OpenAI wants one "tool" message per result, right after the assistant turn.
            tool_messages.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id", ""),
                    "content": text_of(block.get("content")),
                }
            )
        else:
            raise TranslationError(f"{here}: block type {kind!r} is not supported by this model", param=here)
    if not parts:
        return tool_messages
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tool_messages, {"role": "user", "content": parts[0]["text"]}]
    return [*tool_messages, {"role": "user", "content": parts}]


def _source_url(block: dict[str, Any], where: str) -> str:
    source = block.get("source")
    if isinstance(source, dict):
        if source.get("type") == "base64":
            return f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return str(source["url"])
    raise TranslationError(f"{where}: only base64 and url sources are supported", param=where)


def _assistant_message(content: Any, where: str) -> dict[str, Any] | None:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or a list", param=where)
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            tool_calls.append(tool_call_of(block))
        # thinking blocks are Anthropic-only (signed); other models cannot use them.
    if not texts and not tool_calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _add_tools(msg: dict[str, Any], out: dict[str, Any]) -> None:
    tools = msg.get("tools")
    if not tools:
        return
    converted = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else "?"
        if kind not in (None, "custom"):
            raise TranslationError(
                f"tools[{i}]: server tool {kind!r} is not supported by this model",
                param=f"tools[{i}]",
            )
        function: dict[str, Any] = {"name": tool.get("name", "")}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        converted.append({"type": "function", "function": function})
    out["tools"] = converted

    choice = msg.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
        elif kind in _TOOL_CHOICES:
            out["tool_choice"] = _TOOL_CHOICES[kind]
        else:
            raise TranslationError(f"tool_choice type {kind!r} is not supported", param="tool_choice")
        if choice.get("disable_parallel_tool_use") is True:
            out["parallel_tool_calls"] = False

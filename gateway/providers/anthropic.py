"""Translation between the Anthropic Messages and OpenAI Chat Completions request and
response shapes, both ways: OpenAI clients served by Anthropic models
(``chat_to_messages_request``, ``messages_to_chat_response``) and Anthropic clients served by
OpenAI-compatible models (``messages_to_chat_request``, ``chat_to_messages_response``).

Pure functions, dicts in and dicts out. A request that cannot be expressed in the other shape
raises ``TranslationError`` (a 400), except where the caller passes ``drops``: then a part the
other shape has no place for (a role, a content block, a server tool it does not know, as
newer clients send) is left out and named in ``drops``, since the provider of the client's
own API would have taken it (SPEC 6). Streams are in ``anthropic_stream``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from gateway.content import text_of
from gateway.providers import fields
from gateway.providers.anthropic_wire import (
    TranslationError,
    chat_usage,
    completion_id,
    finish_reason,
    message_id,
    messages_usage,
    stop_reason,
    tool_call_of,
    tool_input,
    tool_use_id,
)

# Anthropic requires max_tokens; OpenAI clients usually leave it out.
DEFAULT_MAX_TOKENS = 4096

_TOOL_CHOICES: dict[str, dict[str, Any]] = {
    "auto": {"type": "auto"},
    "none": {"type": "none"},
    "required": {"type": "any"},
}


def dropped(drops: list[str] | None, what: str, error: TranslationError) -> None:
    """Leave a part out and say so, or refuse the request when the caller keeps no list."""
    if drops is None:
        raise error
    drops.append(what)


def chat_to_messages_request(
    chat: dict[str, Any], model_id: str, *, sampling: bool = True, drops: list[str] | None = None
) -> dict[str, Any]:
    """An OpenAI Chat Completions request -> an Anthropic Messages request for ``model_id``.

    ``sampling=False`` drops temperature and top_p: Anthropic deprecated them, and models
    released after Claude Opus 4.6 answer 400 to them, while OpenAI clients often send a
    temperature by habit. With ``sampling=True`` (older models) they are passed, but never
    both at once, which the 4.5-generation models also refuse.
    """
    messages = chat.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list", param="messages")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            # Anthropic has one system prompt, so every system turn is hoisted into it.
            text = text_of(message.get("content"))
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), where, drops)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        else:
            error = TranslationError(f"{where}.role {role!r} is not supported", param=f"{where}.role")
            dropped(drops, "role", error)
            continue
        if not blocks:
            continue
        # Anthropic wants strictly alternating turns; the tool results of one assistant
        # turn (several OpenAI "tool" messages) must be one user turn.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        _tidy(turn)

    out: dict[str, Any] = {
        "model": model_id,
        "messages": turns,
        "max_tokens": _max_tokens(chat),
    }
    if system:
        out["system"] = "\n\n".join(system)
    stop = chat.get("stop")
    if isinstance(stop, str) and stop.strip():
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list):
        # Anthropic refuses blank stop sequences; OpenAI ignores them.
        sequences = [s for s in stop if isinstance(s, str) and s.strip()]
        if sequences:
            out["stop_sequences"] = sequences
    if sampling:
        temperature = chat.get("temperature")
        if isinstance(temperature, int | float):
            out["temperature"] = min(max(float(temperature), 0.0), 1.0)  # OpenAI allows 2
        elif isinstance(chat.get("top_p"), int | float):
            out["top_p"] = chat["top_p"]
    if chat.get("stream"):
        out["stream"] = True
    if isinstance(chat.get("user"), str):
        out["metadata"] = {"user_id": chat["user"]}
    n = chat.get("n")
    if n not in (None, 1):
        raise TranslationError("n > 1 is not supported by Anthropic models", param="n")
    _add_tools(chat, out, drops)
    _add_output_format(chat, out, drops)
    return out


def _add_output_format(chat: dict[str, Any], out: dict[str, Any], drops: list[str] | None) -> None:
    """A JSON schema response_format is Anthropic's structured output (`output_config.format`);
    `json_object` (any JSON at all) has no equivalent there."""
    fmt = chat.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return
    spec = fmt.get("json_schema")
    if fmt.get("type") == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
        out["output_config"] = {"format": {"type": "json_schema", "schema": spec["schema"]}}
        return
    dropped(drops, "response_format", TranslationError(
        f"response_format {fmt.get('type')!r} has no Anthropic equivalent", param="response_format"))


def messages_to_chat_response(
    msg: dict[str, Any], model: str, *, created: int | None = None
) -> dict[str, Any]:
    """An Anthropic message -> an OpenAI ``chat.completion`` reporting ``model``."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            tool_calls.append(tool_call_of(block))
        # thinking and server-tool blocks have no Chat Completions equivalent.
    text = "".join(texts)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id(msg.get("id")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(msg.get("stop_reason")),
            }
        ],
        "usage": chat_usage(msg.get("usage")),
    }


def _user_blocks(content: Any, where: str, drops: list[str] | None) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or a list", param=where)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = fields.string(part.get("text"), f"{here}.text")
            if text:  # Anthropic rejects empty text blocks
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), here))
        elif kind == "file":
            blocks.append(_document_block(part.get("file"), here))
        else:
            error = TranslationError(
                f"{here}: content part type {kind!r} is not supported by Anthropic models",
                param=here,
            )
            dropped(drops, "content_part", error)
    return blocks


def _image_block(image: Any, where: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise TranslationError(f"{where}.image_url.url must be a string", param=where)
    if url.startswith("data:"):
        media_type, data = _data_url(url, where)
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError(f"{where}.image_url.url must be an http(s) or data: URL", param=where)


def _document_block(file: Any, where: str) -> dict[str, Any]:
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        raise TranslationError(
            f"{where}: only inline file_data is supported for Anthropic models", param=where
        )
    media_type, data = _data_url(data_url, where)
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }


def _data_url(url: str, where: str) -> tuple[str, str]:
    header, comma, data = url[5:].partition(",")
    media_type, *params = header.split(";")
    if not comma or "base64" not in params or not media_type:
        raise TranslationError(f"{where}: expected a base64 data: URL", param=where)
    return media_type, data


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for part in content:
            text = part.get("text") or part.get("refusal") if isinstance(part, dict) else None
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text})
    for here, call in fields.objects(message.get("tool_calls"), f"{where}.tool_calls"):
        function = call.get("function")
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise TranslationError(f"{here}: only function tool calls are supported", param=here)
        arguments = tool_input(function.get("arguments"))
        if arguments is None:  # a call cut short (max tokens) earlier in the session, on any model:
            raw = function.get("arguments")
            arguments = {"_raw_arguments": raw if isinstance(raw, str) else ""}  # kept, as answers are
        blocks.append(
            {
                "type": "tool_use",
                "id": fields.string(call.get("id"), f"{here}.id"),
                "name": fields.string(function.get("name"), f"{here}.function.name"),
                "input": arguments,
            }
        )
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise TranslationError(f"{where}.tool_call_id is required", param=f"{where}.tool_call_id")
    content = message.get("content")
    result: Any = content if isinstance(content, str) else text_of(content)
    return {"type": "tool_result", "tool_use_id": call_id, "content": result}


def _tidy(turn: dict[str, Any]) -> None:
    blocks: list[dict[str, Any]] = turn["content"]
    if turn["role"] == "user" and any(b["type"] == "tool_result" for b in blocks):
        # Anthropic wants the tool results first in the turn that answers a tool call.
        blocks.sort(key=lambda b: b["type"] != "tool_result")
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        turn["content"] = blocks[0]["text"]


def _max_tokens(chat: dict[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = chat.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TranslationError(f"{key} must be a positive integer", param=key)
        return value
    return DEFAULT_MAX_TOKENS


def _add_tools(chat: dict[str, Any], out: dict[str, Any], drops: list[str] | None) -> None:
    tools = fields.array(chat.get("tools"), "tools")
    if not tools:
        return  # Anthropic rejects tool_choice without tools
    converted = []
    for i, tool in enumerate(tools):
        here = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            error = TranslationError(f"{here}: only function tools are supported", param=here)
            dropped(drops, "tool", error)
            continue
        entry: dict[str, Any] = {"name": fields.string(function.get("name"), f"{here}.function.name")}
        description = fields.string(function.get("description"), f"{here}.function.description")
        if description:
            entry["description"] = description
        schema = fields.mapping(function.get("parameters"), f"{here}.function.parameters")
        entry["input_schema"] = schema or {"type": "object", "properties": {}}
        converted.append(entry)
    if not converted:
        return  # every tool was dropped: tool_choice would name none
    out["tools"] = converted

    choice = chat.get("tool_choice")
    tool_choice: dict[str, Any] | None = None
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise TranslationError(f"tool_choice {choice!r} is not supported", param="tool_choice")
        tool_choice = dict(_TOOL_CHOICES[choice])
    elif isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise TranslationError("tool_choice.function.name is required", param="tool_choice")
        tool_choice = {"type": "tool", "name": name}
    if chat.get("parallel_tool_calls") is False:
        tool_choice = tool_choice or {"type": "auto"}
        if tool_choice["type"] != "none":
            tool_choice["disable_parallel_tool_use"] = True
    if tool_choice is not None:
        out["tool_choice"] = tool_choice


# Anthropic clients, OpenAI-compatible models.

_CHAT_TOOL_CHOICES: dict[str, str] = {"auto": "auto", "any": "required", "none": "none"}


def messages_to_chat_request(
    msg: dict[str, Any], model_id: str, *, max_tokens_field: str = "max_tokens",
    drops: list[str] | None = None,
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
            out_messages.extend(_user_messages(message.get("content"), where, drops))
        elif role == "assistant":
            assistant = _assistant_message(message.get("content"), where)
            if assistant is not None:
                out_messages.append(assistant)
        elif role == "system" and drops is not None:
            # Newer Claude Code sends system turns inside `messages`: OpenAI has them too.
            text = text_of(message.get("content"))
            if text:
                out_messages.append({"role": "system", "content": text})
        else:
            dropped(drops, "role", TranslationError(f"{where}.role {role!r} is not supported", param=where))

    out: dict[str, Any] = {"model": model_id, "messages": out_messages}
    if isinstance(msg.get("max_tokens"), int):
        out[max_tokens_field] = msg["max_tokens"]
    stop = fields.array(msg.get("stop_sequences"), "stop_sequences")
    if stop:
        out["stop"] = [fields.string(s, f"stop_sequences[{i}]") for i, s in enumerate(stop)]
    for key in ("temperature", "top_p"):
        if isinstance(msg.get(key), int | float):
            out[key] = msg[key]
    if msg.get("stream"):
        # Without include_usage an OpenAI stream carries no token counts at all.
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = msg.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        # Claude Code's is ~150 characters (JSON, or device, account and session ids): OpenAI
        # caps `user` at 64, and others refuse long ones. A stable digest names the same user.
        out["user"] = hashlib.sha256(metadata["user_id"].encode()).hexdigest()[:64]
    _add_chat_tools(msg, out, drops)
    config = msg.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        # Anthropic's structured output is OpenAI's strict JSON schema (same schema rules).
        out["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "output", "schema": fmt["schema"], "strict": True}}
    return out


def chat_to_messages_response(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` -> an Anthropic message reporting ``model``."""
    choices = chat.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = text_of(message.get("content"))
    refusal = message.get("refusal") if not text else None
    text = text or (refusal if isinstance(refusal, str) else "")
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
        "stop_reason": "refusal" if isinstance(refusal, str) and refusal else stop_reason(
            choice.get("finish_reason"), saw_tool_call=saw_tool_call),
        "stop_sequence": None,
        "usage": messages_usage(chat.get("usage")),
    }


def _user_messages(content: Any, where: str, drops: list[str] | None) -> list[dict[str, Any]]:
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
            parts.append({"type": "text", "text": fields.string(block.get("text"), f"{here}.text")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _source_url(block, here)}})
        elif kind == "document":
            source = block.get("source") if isinstance(block.get("source"), dict) else {}
            if source.get("type") == "text" and isinstance(source.get("data"), str):
                parts.append({"type": "text", "text": source["data"]})  # a plain-text document is its text
            elif source.get("type") == "url":  # chat files are data or ids
                dropped(drops, "content_part", TranslationError(
                    f"{here}: a document by URL has no Chat Completions form", param=here))
            else:
                parts.append({"type": "file", "file": {"file_data": _source_url(block, here)}})
        elif kind == "tool_result":
            # OpenAI wants one "tool" message per result, right after the assistant turn. Its
            # tool messages hold text only: a result's images (Claude Code reading an image
            # file) go in the user message that follows, and a failed call says so.
            text = text_of(block.get("content"))
            if block.get("is_error") is True:
                text = f"Error: {text}" if text else "Error"
            tool_messages.append({
                "role": "tool",
                "tool_call_id": fields.string(block.get("tool_use_id"), f"{here}.tool_use_id"),
                "content": text,
            })
            result = block.get("content")
            for k, inner in enumerate(result if isinstance(result, list) else ()):
                if isinstance(inner, dict) and inner.get("type") == "image":
                    url = _source_url(inner, f"{here}.content[{k}]")
                    parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            error = TranslationError(
                f"{here}: block type {kind!r} is not supported by this model", param=here
            )
            dropped(drops, "content_block", error)
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
    for j, block in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(fields.string(block.get("text"), f"{here}.text"))
        elif kind == "tool_use":
            fields.string(block.get("id"), f"{here}.id")
            fields.string(block.get("name"), f"{here}.name")
            tool_calls.append(tool_call_of(block))
        # thinking blocks are Anthropic-only (signed); other models cannot use them.
    if not texts and not tool_calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _add_chat_tools(msg: dict[str, Any], out: dict[str, Any], drops: list[str] | None) -> None:
    tools = fields.objects(msg.get("tools"), "tools")
    if not tools:
        return
    converted = []
    for here, tool in tools:
        kind = tool.get("type")
        if kind not in (None, "custom"):
            error = TranslationError(
                f"{here}: server tool {kind!r} is not supported by this model", param=here
            )
            dropped(drops, "tool", error)
            continue
        function: dict[str, Any] = {"name": fields.string(tool.get("name"), f"{here}.name")}
        description = fields.string(tool.get("description"), f"{here}.description")
        if description:
            function["description"] = description
        schema = fields.mapping(tool.get("input_schema"), f"{here}.input_schema")
        function["parameters"] = schema or {"type": "object", "properties": {}}
        converted.append({"type": "function", "function": function})
    if not converted:
        return  # every tool was dropped: tool_choice would name none
    out["tools"] = converted

    choice = msg.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":
            name = fields.string(choice.get("name"), "tool_choice.name")
            out["tool_choice"] = {"type": "function", "function": {"name": name}}
        elif isinstance(kind, str) and kind in _CHAT_TOOL_CHOICES:
            out["tool_choice"] = _CHAT_TOOL_CHOICES[kind]
        else:
            raise TranslationError(f"tool_choice type {kind!r} is not supported", param="tool_choice")
        if choice.get("disable_parallel_tool_use") is True:
            out["parallel_tool_calls"] = False

"""Translation between the OpenAI Responses API and Chat Completions: a Responses request as
a chat request (for OpenAI-compatible servers without `/responses`), and a chat completion
as a Responses `response` object. Pure functions, dicts in and dicts out.

Reasoning items have no chat equivalent and are dropped (a chat model never made them).
Hosted tools (web search, file search, computer use...) cannot run on a chat model: offered
in `tools` they are left out and named in the caller's `drops` (Codex CLI offers
`web_search` on every request, and refusing it would refuse Codex on every translated
model); forced by `tool_choice`, or with no `drops` list given, they are a 400 naming the
tool. The request was validated by `gateway.apis.responses` first, so shapes are trusted.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from gateway.content import text_of
from gateway.errors import BadRequest
from gateway.providers.responses_tools import (
    Shapes,
    call_shapes,
    custom_arguments,
    custom_as_function,
    custom_call_item,
    custom_input,
    offered,
    with_namespace,
)
from gateway.usage import token_count

logger = logging.getLogger("gateway.responses")

# finish_reason -> (status, incomplete_details.reason)
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(24).hex()}"


def input_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's `input` as items (a string is one user message)."""
    given = payload.get("input")
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": given}]}]
    return [item for item in given or () if isinstance(item, dict)]


def item_kind(item: dict[str, Any]) -> str:
    """An input item's type; a bare `{role, content}` is an easy-input message."""
    kind = item.get("type")
    return "message" if kind is None and "role" in item else str(kind)


def hosted_tool_error(kind: str, where: str) -> BadRequest:
    return BadRequest(
        f"{where}: the hosted tool {kind!r} runs only on OpenAI's own Responses API; this "
        "model is served through translation, which can carry function tools only",
        param=where, code="unsupported_tool",
    )


# --- request: Responses -> Chat Completions ------------------------------------------------------


def _chat_file(part: dict[str, Any]) -> dict[str, Any] | None:
    """An `input_file` part as a chat `file` part: inline data or a file id, with its name.
    None for one given by URL only (chat has no place for it)."""
    file = {key: part[key] for key in ("file_data", "file_id", "filename") if isinstance(part.get(key), str)}
    return file if "file_data" in file or "file_id" in file else None


def to_chat_messages(
    items: list[dict[str, Any]], instructions: Any, drops: list[str] | None = None
) -> list[dict[str, Any]]:
    """Input items as chat messages; a content part chat has no place for is left out and
    named in `drops` (`content_part`)."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        kind = item_kind(item)
        if kind == "message":
            _add_message(messages, item, drops)
        elif kind in ("function_call", "custom_tool_call"):
            arguments = (item.get("arguments") or "{}") if kind == "function_call" else custom_arguments(
                item.get("input"))
            call = {"id": item.get("call_id") or item.get("id") or new_id("call"), "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # its text and calls: one chat turn
                last.setdefault("tool_calls", []).append(call)
                last["content"] = last["content"] or None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            text = output if isinstance(output, str) else text_of(output)
            messages.append({"role": "tool", "tool_call_id": item.get("call_id", ""), "content": text})
        # reasoning: a chat model cannot take it back; dropped by design. additional_tools:
        # tools, offered by `to_chat_tools`.
    return messages


def _add_message(messages: list[dict[str, Any]], item: dict[str, Any], drops: list[str] | None) -> None:
    role = item.get("role", "user")
    content = item.get("content")
    if role == "assistant":
        text = content if isinstance(content, str) else "".join(
            str(p.get("text") or p.get("refusal") or "") for p in content or () if isinstance(p, dict))
        messages.append({"role": "assistant", "content": text})
        return
    chat_role = "system" if role == "developer" else role
    if isinstance(content, str):
        messages.append({"role": chat_role, "content": content})
        return
    parts: list[dict[str, Any]] = []
    for part in content or ():
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                logger.warning("an input_image without image_url (file_id) cannot be translated; dropped")
                if drops is not None:
                    drops.append("content_part")
                continue
            image: dict[str, Any] = {"url": url}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and (file := _chat_file(part)):
            parts.append({"type": "file", "file": file})
        else:
            logger.warning("a %s content part has no Chat Completions equivalent; dropped", kind)
            if drops is not None:
                drops.append("content_part")
    if chat_role == "system":
        messages.append({"role": "system", "content": "\n".join(p.get("text", "") for p in parts)})
    elif parts and all(p["type"] == "text" for p in parts):
        messages.append({"role": chat_role, "content": "\n".join(p["text"] for p in parts)})
    else:
        messages.append({"role": chat_role, "content": parts})


def to_chat_tools(
    payload: dict[str, Any], items: list[dict[str, Any]], drops: list[str] | None = None
) -> list[dict[str, Any]]:
    """Functions as they are, custom tools as one-string functions, namespaces flattened;
    hosted tools left out (named in `drops`) or, without `drops`, a 400."""
    out = []
    names: set[str] = set()
    allowed = allowed_names(payload.get("tool_choice"))
    for where, tool in offered(payload, items):
        kind = tool.get("type")
        if allowed is not None and kind in ("custom", "function") and tool["name"] not in allowed:
            continue  # tool_choice allowed_tools: chat has no such list, so the others are not offered
        if kind in ("custom", "function"):
            if tool["name"] in names:  # two namespaces with one name: a chat model takes one
                if drops is not None:
                    drops.append("tool")
                continue
            names.add(tool["name"])
        if kind == "custom":
            out.append({"type": "function", "function": custom_as_function(tool)})
            continue
        if kind != "function":
            if drops is None:
                raise hosted_tool_error(str(kind), where)
            drops.append("tool")  # a label: its kinds are the clients' to name
            continue
        function: dict[str, Any] = {"name": tool["name"]}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def allowed_names(choice: Any) -> set[str] | None:
    """The tools an `allowed_tools` tool_choice lets the model call, by name; None: any."""
    if not isinstance(choice, dict) or choice.get("type") != "allowed_tools":
        return None
    tools = choice.get("tools")
    if not isinstance(tools, list):
        return None
    return {tool["name"] for tool in tools if isinstance(tool, dict) and isinstance(tool.get("name"), str)}


def to_chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) or choice is None:
        return choice
    if choice.get("type") in ("function", "custom"):
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    if choice.get("type") == "allowed_tools":
        return choice.get("mode", "auto")
    raise hosted_tool_error(str(choice.get("type")), "tool_choice")


def to_chat_request(
    payload: dict[str, Any], items: list[dict[str, Any]], model_id: str, drops: list[str] | None = None,
    *, max_tokens_field: str = "max_tokens",
) -> dict[str, Any]:
    """A Responses request (its input already expanded with any stored context) -> chat;
    `max_tokens_field` as `anthropic.messages_to_chat_request` takes it."""
    messages = to_chat_messages(items, payload.get("instructions"), drops)
    chat: dict[str, Any] = {"model": model_id, "messages": messages}
    tools = to_chat_tools(payload, items, drops)
    if tools:
        chat["tools"] = tools
        if payload.get("tool_choice") is not None:
            chat["tool_choice"] = to_chat_tool_choice(payload["tool_choice"])
        if isinstance(payload.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = payload["parallel_tool_calls"]
    elif isinstance(payload.get("tool_choice"), dict) and payload["tool_choice"].get("type") not in (
            "function", "custom"):
        to_chat_tool_choice(payload["tool_choice"])  # a hosted tool_choice is refused all the same
    for key in ("temperature", "top_p", "user"):
        if payload.get(key) is not None:
            chat[key] = payload[key]
    if payload.get("max_output_tokens") is not None:
        chat[max_tokens_field] = payload["max_output_tokens"]
    fmt = (payload.get("text") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {"name": fmt.get("name", "response"), "schema": fmt.get("schema", {})}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    effort = (payload.get("reasoning") or {}).get("effort")
    if isinstance(effort, str):
        chat["reasoning_effort"] = effort
    if payload.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the completed event reports usage
    return chat


# --- response: a chat completion -> a Responses response ----------------------------------------


def usage_of_chat(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = token_count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = (
        token_count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    )
    return responses_usage(prompt, completion, cached, reasoning)


def responses_usage(
    prompt: int, completion: int, cached: int = 0, reasoning: int = 0, *, written: int = 0
) -> dict[str, Any]:
    """`written`: prompt tokens written to the cache (Anthropic's cache_creation_input_tokens)."""
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }



def message_item(text: str, item_id: str | None = None, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_call_item(
    call_id: str, name: str, arguments: str, item_id: str | None = None, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id or new_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def call_item(
    call_id: str, name: str, arguments: str, shapes: Shapes, item_id: str | None = None
) -> dict[str, Any]:
    """A model's tool call as the client offered the tool: a custom tool's as `custom_tool_call`,
    a namespaced one's with its namespace."""
    if name not in shapes:
        return function_call_item(call_id, name, arguments, item_id)
    if shapes[name][0]:
        return with_namespace(custom_call_item(call_id, name, custom_input(arguments), item_id), shapes)
    return with_namespace(function_call_item(call_id, name, arguments, item_id), shapes)


def status_of_finish(finish: Any) -> tuple[str, dict[str, str] | None]:
    reason = _INCOMPLETE.get(finish) if isinstance(finish, str) else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def from_chat_response(
    request: dict[str, Any], chat: dict[str, Any], model: str, response_id: str,
    items: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`items`: the whole conversation, stored turns included (tools offered in an earlier
    turn's `additional_tools` item shape its calls too); the request's own input by default."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(message_item(text))
    elif isinstance(message.get("refusal"), str) and message["refusal"]:
        item = message_item("")
        item["content"] = [{"type": "refusal", "refusal": message["refusal"]}]
        output.append(item)
    calls = message.get("tool_calls") or ()
    shapes = call_shapes(request, items) if calls else {}  # read only when needed
    for call in calls:
        function = call.get("function") or {}
        output.append(call_item(
            call.get("id") or new_id("call"), function.get("name", ""), function.get("arguments") or "{}",
            shapes))
    status, incomplete = status_of_finish(choice.get("finish_reason"))
    return response_object(
        request, response_id, model, stopped_in_last(output, status), status,
        usage=usage_of_chat(chat.get("usage")), incomplete=incomplete,
    )


def stopped_in_last(output: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    """A response cut short (max_output_tokens, a content filter) was cut in its last item."""
    if status != "completed" and output:
        output[-1]["status"] = status
    return output


def response_object(
    request: dict[str, Any], response_id: str, model: str, output: list[dict[str, Any]],
    status: str, *, usage: dict[str, Any] | None = None, incomplete: dict[str, str] | None = None,
    error: dict[str, Any] | None = None, created_at: float | None = None,
) -> dict[str, Any]:
    """A `response` object, echoing the request's settings as OpenAI does."""
    created = int(time.time()) if created_at is None else created_at
    given = request.get("text")
    text: dict[str, Any] = given if isinstance(given, dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "store": request.get("store", True),
        "temperature": request.get("temperature"),
        "text": {"format": {"type": "text"}, **text},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": usage,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
        "prompt_cache_key": request.get("prompt_cache_key"),
    }

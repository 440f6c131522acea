"""Validation of a Responses API request (`POST /v1/responses`): every field the gateway reads
or translates is checked for its type, and a mistake is a 400 naming the field, in the OpenAI
error envelope the Responses API uses. Fields the gateway does not know pass on untouched
(a native provider may know them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.errors import BadRequest

MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
PART_TYPES = frozenset(
    {"input_text", "input_image", "input_file", "input_audio", "output_text", "refusal", "text"}
)
# custom_tool_call(_output) and additional_tools (tools offered as an input item): Codex CLI.
ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning", "custom_tool_call",
                        "custom_tool_call_output", "additional_tools"})
_ITEM_NAMES = ", ".join(sorted(ITEM_TYPES))
FORMAT_TYPES = frozenset({"text", "json_schema", "json_object"})
TOOL_CHOICES = frozenset({"none", "auto", "required"})


def bad(param: str, message: str, code: str = "invalid_type") -> BadRequest:
    return BadRequest(f"{param}: {message}", param=param, code=code)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def optional(payload: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise bad(key, f"must be {what}")
    return value


def validate(payload: dict[str, Any], max_items: int) -> None:
    _input(payload, max_items)
    for key in payload:  # what was sent, not every field there is: a request carries a few
        simple = _SIMPLE.get(key)
        if simple is not None:
            optional(payload, key, *simple)
        else:
            check = _CHECKS.get(key)
            if check is not None:
                check(payload)


def _background(payload: dict[str, Any]) -> None:
    optional(payload, "background", bool, "a boolean")
    if payload["background"] is True:
        raise bad("background", "background responses are not supported by the gateway", "unsupported_value")


def _ranged(key: str, top: float) -> Callable[[dict[str, Any]], None]:
    def check(payload: dict[str, Any]) -> None:
        value = payload[key]
        if value is not None and (not _is_number(value) or not 0 <= value <= top):
            raise bad(key, f"must be a number between 0 and {top:g}")
    return check


def _max_output_tokens(payload: dict[str, Any]) -> None:
    tokens = payload["max_output_tokens"]
    if tokens is not None and (not _is_int(tokens) or tokens < 1):
        raise bad("max_output_tokens", "must be a positive integer")


def _metadata(payload: dict[str, Any]) -> None:
    metadata = optional(payload, "metadata", dict, "an object")
    if metadata is None:
        return
    if len(metadata) > 16:
        raise bad("metadata", "may hold at most 16 keys", "invalid_value")
    for name, value in metadata.items():
        if not isinstance(value, str) or len(name) > 64 or len(value) > 512:
            raise bad(f"metadata.{name}", "values must be strings of at most 512 characters")


def _include(payload: dict[str, Any]) -> None:
    include = optional(payload, "include", list, "an array of strings")
    if include is not None and not all(isinstance(i, str) for i in include):
        raise bad("include", "must be an array of strings")


def _reasoning(payload: dict[str, Any]) -> None:
    reasoning = optional(payload, "reasoning", dict, "an object")
    if reasoning is not None:
        for key in ("effort", "summary"):
            if reasoning.get(key) is not None and not isinstance(reasoning[key], str):
                raise bad(f"reasoning.{key}", "must be a string")


def _input(payload: dict[str, Any], max_items: int) -> None:
    given = payload.get("input")
    if given is None:
        raise bad("input", "is required", "missing_required_parameter")
    if isinstance(given, str):
        return
    if not isinstance(given, list):
        raise bad("input", "must be a string or an array of input items")
    if len(given) > max_items:
        raise bad("input", f"has {len(given)} items; the limit is {max_items}", "too_many_items")
    for index, item in enumerate(given):
        _item(item, f"input[{index}]")


def _item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise bad(where, "must be an object")
    kind = item.get("type")
    if kind is None and "role" in item:
        kind = "message"
    if kind == "item_reference":
        raise bad(f"{where}.type", "item_reference is not supported by the gateway; send the item itself",
                  "unsupported_value")
    if not isinstance(kind, str) or kind not in ITEM_TYPES:
        raise bad(f"{where}.type", f"unknown input item type {kind!r}; expected one of {_ITEM_NAMES}",
                  "invalid_value")
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            raise bad(f"{where}.role", "must be user, assistant, system or developer", "invalid_value")
        _content(item.get("content"), f"{where}.content")
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(item.get(key), str):
                raise bad(f"{where}.{key}", "must be a string")
    elif kind == "custom_tool_call":
        for key in ("call_id", "name", "input"):
            if not isinstance(item.get(key), str):
                raise bad(f"{where}.{key}", "must be a string")
    elif kind == "additional_tools":
        if not isinstance(item.get("tools"), list):
            raise bad(f"{where}.tools", "must be an array of tools")
        _tool_list(item["tools"], f"{where}.tools")
    elif kind in ("function_call_output", "custom_tool_call_output"):
        if not isinstance(item.get("call_id"), str):
            raise bad(f"{where}.call_id", "must be a string")
        output = item.get("output")
        if isinstance(output, list):
            _content(output, f"{where}.output")
        elif not isinstance(output, str):
            raise bad(f"{where}.output", "must be a string or an array of content parts")


def _content(content: Any, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad(where, "must be a string or an array of content parts")
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        if not isinstance(part, dict):
            raise bad(at, "must be an object")
        kind = part.get("type")
        if not isinstance(kind, str) or kind not in PART_TYPES:
            raise bad(f"{at}.type", f"unknown content part type {kind!r}", "invalid_value")
        if kind in ("input_text", "output_text", "text") and not isinstance(part.get("text"), str):
            raise bad(f"{at}.text", "must be a string")
        if kind == "input_image" and not (
            isinstance(part.get("image_url"), str) or isinstance(part.get("file_id"), str)
        ):
            raise bad(f"{at}.image_url", "an input_image needs an image_url (or file_id) string")


def _text(payload: dict[str, Any]) -> None:
    text = optional(payload, "text", dict, "an object")
    if text is None:
        return
    fmt = text.get("format")
    if fmt is not None and not isinstance(fmt, dict):
        raise bad("text.format", "must be an object")
    if fmt is None:
        return
    kind = fmt.get("type")
    if not isinstance(kind, str) or kind not in FORMAT_TYPES:
        raise bad("text.format.type", "must be text, json_schema or json_object", "invalid_value")
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str):
            raise bad("text.format.name", "must be a string")
        if not isinstance(fmt.get("schema"), dict):
            raise bad("text.format.schema", "must be a JSON schema object")
        if fmt.get("strict") is not None and not isinstance(fmt["strict"], bool):
            raise bad("text.format.strict", "must be a boolean")


def _tools(payload: dict[str, Any]) -> None:
    tools = optional(payload, "tools", list, "an array of tools")
    _tool_list(tools or [], "tools")


def _tool_choice(payload: dict[str, Any]) -> None:
    choice = payload["tool_choice"]
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise bad("tool_choice", "must be none, auto, required or an object", "invalid_value")
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise bad("tool_choice", "must be none, auto, required or an object with a type")
    if choice["type"] in ("function", "custom") and not isinstance(choice.get("name"), str):
        raise bad("tool_choice.name", "must be a string")


def _tool_list(tools: list[Any], at: str, nested: bool = False) -> None:
    for index, tool in enumerate(tools):
        where = f"{at}[{index}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise bad(where, "must be an object with a type")
        kind = tool["type"]
        if kind in ("function", "custom", "namespace"):
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise bad(f"{where}.name", "must be a non-empty string")
            if tool.get("description") is not None and not isinstance(tool["description"], str):
                raise bad(f"{where}.description", "must be a string")
        if kind == "function" and tool.get("parameters") is not None and not isinstance(
                tool["parameters"], dict):
            raise bad(f"{where}.parameters", "must be a JSON schema object")
        if kind == "custom" and tool.get("format") is not None and not isinstance(tool["format"], dict):
            raise bad(f"{where}.format", "must be an object")
        if kind == "namespace":
            if nested:
                raise bad(where, "a namespace cannot hold another namespace", "invalid_value")
            if not isinstance(tool.get("tools"), list):
                raise bad(f"{where}.tools", "must be an array of tools")
            _tool_list(tool["tools"], f"{where}.tools", nested=True)


# Fields checked for their type alone: (type, what the message calls it).
_SIMPLE: dict[str, tuple[type, str]] = {
    "instructions": (str, "a string"), "previous_response_id": (str, "a string"),
    "prompt_cache_key": (str, "a string"), "user": (str, "a string"),
    "parallel_tool_calls": (bool, "a boolean"), "store": (bool, "a boolean"),
}
_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "background": _background, "temperature": _ranged("temperature", 2.0),
    "top_p": _ranged("top_p", 1.0), "max_output_tokens": _max_output_tokens, "metadata": _metadata,
    "include": _include, "reasoning": _reasoning, "text": _text, "tools": _tools,
    "tool_choice": _tool_choice,
}

"""The tools a Responses request offers, as a Chat Completions model can take them, and the
calls such a model makes, as the Responses items the client expects back.

Codex CLI (0.17x) offers tools in three shapes besides plain functions: `namespace` tools
grouping functions, `custom` tools (free-form text input, e.g. its JavaScript `exec` with a lark
grammar), and, for its default model, an `additional_tools` input item holding them instead of
the top-level `tools`. Translated, every function of a namespace is a plain function, a custom
tool is a function taking one string, `input`, and a call to it comes back as a
`custom_tool_call` item carrying that string; a call to a namespaced tool names its `namespace`
(Codex answers "unsupported call" without it). The grammar cannot be enforced by a chat model;
its definition is dropped (the description stays). Pure functions, dicts in and out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import orjson

CUSTOM_INPUT = "input"  # the one parameter a translated custom tool takes


# A tool name -> (is it a custom tool, its namespace): only for tools whose calls need either.
Shapes = dict[str, tuple[bool, str | None]]


def offered(payload: dict[str, Any], items: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every tool offered, with where it was: top-level `tools`, then `additional_tools` items;
    a namespace's tools in its place (the namespace itself is not a tool)."""
    for where, tool, _ in _offered(payload, items):
        yield where, tool


def _offered(
    payload: dict[str, Any], items: list[dict[str, Any]]
) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    for index, tool in enumerate(payload.get("tools") or ()):
        yield from _flat(tool, f"tools[{index}]", None)
    for index, item in enumerate(items):
        if item.get("type") == "additional_tools":
            for inner, tool in enumerate(item.get("tools") or ()):
                yield from _flat(tool, f"input[{index}].tools[{inner}]", None)


def _flat(tool: Any, where: str, namespace: str | None) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    if not isinstance(tool, dict):
        return
    if tool.get("type") == "namespace":
        name = tool.get("name") if isinstance(tool.get("name"), str) else None
        for index, inner in enumerate(tool.get("tools") or ()):
            yield from _flat(inner, f"{where}.tools[{index}]", name)
    else:
        yield where, tool, namespace


def call_shapes(payload: dict[str, Any], items: list[dict[str, Any]] | None = None) -> Shapes:
    """How calls to the offered tools go back: custom tools as `custom_tool_call`, namespaced
    ones with their namespace; plain functions are not listed."""
    if items is None:
        given = payload.get("input")
        items = [i for i in given if isinstance(i, dict)] if isinstance(given, list) else []
    shapes: Shapes = {}
    for _, tool, namespace in _offered(payload, items):
        custom = tool.get("type") == "custom"
        name = tool.get("name")
        if (custom or namespace is not None) and isinstance(name, str):
            shapes.setdefault(name, (custom, namespace))
    return shapes


def custom_as_function(tool: dict[str, Any]) -> dict[str, Any]:
    """A custom tool as a chat function taking its free-form text as `input`."""
    given = tool.get("description")
    described = given if isinstance(given, str) else ""
    fmt = tool.get("format")
    note = " The input is free-form text"
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        note += f" in the tool's {fmt.get('syntax') or 'grammar'} syntax"
    return {"name": tool["name"], "description": (described + note + ".").strip(), "parameters": {
        "type": "object", "properties": {CUSTOM_INPUT: {"type": "string"}},
        "required": [CUSTOM_INPUT], "additionalProperties": False}}


def custom_arguments(text: Any) -> str:
    """A `custom_tool_call`'s input as the arguments of the translated function call."""
    return orjson.dumps({CUSTOM_INPUT: text if isinstance(text, str) else ""}).decode()


def custom_input(arguments: str) -> str:
    """The translated function call's arguments back as the custom tool's input (the raw
    arguments when the model did not send the one-string object)."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get(CUSTOM_INPUT), str):
        return str(parsed[CUSTOM_INPUT])
    return arguments


def custom_call_item(
    call_id: str, name: str, text: str, item_id: str | None = None, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id or f"ctc_{os.urandom(24).hex()}",
        "type": "custom_tool_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "input": text,
    }


def with_namespace(item: dict[str, Any], shapes: Shapes) -> dict[str, Any]:
    """The call item with the namespace its tool was offered in, if any."""
    namespace = shapes.get(item["name"], (False, None))[1]
    if namespace is not None:
        item["namespace"] = namespace
    return item

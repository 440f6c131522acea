"""The tools a Responses request offers, as a Chat Completions model can take them, and the
calls such a model makes, as the Responses items the client expects back.

Codex CLI (0.17x) offers tools in three shapes besides plain functions: `namespace` tools
grouping functions, `custom` tools (free-form text input, e.g. its JavaScript `exec` with a lark
grammar), and, for its default model, an `additional_tools` input item holding them instead of
the top-level `tools`. Translated, every function of a namespace is a plain function, a custom
tool is a function taking one string, `input`, and a call to it comes back as a
`custom_tool_call` item carrying that string. The grammar cannot be enforced by a chat model;
its definition is dropped (the description stays). Pure functions, dicts in and out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import orjson

CUSTOM_INPUT = "input"  # the one parameter a translated custom tool takes


def offered(payload: dict[str, Any], items: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every tool offered, with where it was: top-level `tools`, then `additional_tools` items;
    a namespace's tools in its place (the namespace itself is not a tool)."""
    for index, tool in enumerate(payload.get("tools") or ()):
        yield from _flat(tool, f"tools[{index}]")
    for index, item in enumerate(items):
        if item.get("type") == "additional_tools":
            for inner, tool in enumerate(item.get("tools") or ()):
                yield from _flat(tool, f"input[{index}].tools[{inner}]")


def _flat(tool: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(tool, dict):
        return
    if tool.get("type") == "namespace":
        for index, inner in enumerate(tool.get("tools") or ()):
            yield from _flat(inner, f"{where}.tools[{index}]")
    else:
        yield where, tool


def custom_names(payload: dict[str, Any], items: list[dict[str, Any]] | None = None) -> frozenset[str]:
    """The names of the custom tools offered (their calls go back as `custom_tool_call`)."""
    if items is None:
        given = payload.get("input")
        items = [i for i in given if isinstance(i, dict)] if isinstance(given, list) else []
    return frozenset(
        tool["name"] for _, tool in offered(payload, items)
        if tool.get("type") == "custom" and isinstance(tool.get("name"), str)
    )


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

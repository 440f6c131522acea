"""The simulated model's mind: what to answer, independent of the wire format.

Both API modules parse a request into a `Conversation` and render a `Reply`; this module
decides the reply. With tools, it behaves like a small agent (SPEC section 9): it plans one
call per value of each tool's first enum parameter, makes the first call not yet made, and
once all are made it answers with text that quotes the tool results. Everything is a pure
function of the request, so the same conversation always gets the same answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

JsonObject = dict[str, Any]

_FILLER = (
    "This is a simulated answer from the affinity gateway simulator, a fake model that "
    "speaks both the OpenAI and the Anthropic APIs for demos, tests and load tests."
).split()
_ARGUMENT_PIECE = 12  # characters of tool-call JSON per streamed delta
_EXCERPT = 48  # characters quoted from each tool result
_MAX_DEPTH = 8  # schemas can nest (or recurse through $ref); stop somewhere
_MAX_SIZE = 64  # the most array items or string characters an example has, whatever a schema asks


class BadRequest(ValueError):
    """The request is not valid for its API; rendered as a 400 in that API's shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    schema: JsonObject  # JSON schema of the arguments object


@dataclass(frozen=True, slots=True)
class ToolResult:
    name: str  # the tool that produced it, when the conversation says so
    text: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """What the simulator needs from a request, whichever API it came in."""

    model: str
    stream: bool
    max_tokens: int | None
    tools: tuple[Tool, ...]
    calls_made: tuple[tuple[str, JsonObject], ...]
    tool_results: tuple[ToolResult, ...]
    prompt_chars: int
    digest: str  # hash of the raw body: ids derive from it so they are deterministic too
    include_usage: bool = False  # OpenAI stream_options.include_usage
    cached_tokens: int = 0  # the part of the prompt read from the model's prompt cache
    # The request as chat messages when its API has none (Responses): what the prompt cache
    # reads, instead of the body as sent.
    prompt: JsonObject | None = None
    # What one API's renderer needs of its own request (Responses: its body and whole input).
    request: Any = None

    @property
    def prompt_tokens(self) -> int:
        return max(1, math.ceil(self.prompt_chars / 4))


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: JsonObject

    @property
    def arguments_json(self) -> str:
        return orjson.dumps(self.arguments).decode()


@dataclass(frozen=True, slots=True)
class Reply:
    """Text tokens, or the pieces of one tool call's JSON arguments; one delta each."""

    tokens: tuple[str, ...]
    tool_call: ToolCall | None = None
    truncated: bool = False  # stopped by max_tokens

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def reply(conversation: Conversation, answer_tokens: int) -> Reply:
    """The whole decision: a tool call while the plan has calls left, else text."""
    if conversation.tools:
        call = next_call(conversation.tools, conversation.calls_made)
        if call is not None:
            args = call.arguments_json
            pieces = [args[i : i + _ARGUMENT_PIECE] for i in range(0, len(args), _ARGUMENT_PIECE)]
            return Reply(tuple(pieces), call)
        return _text(_words(_summary(conversation.tool_results)), conversation.max_tokens)
    words = [_FILLER[i % len(_FILLER)] for i in range(answer_tokens)]
    return _text(words, conversation.max_tokens)


def plan(tools: tuple[Tool, ...]) -> list[tuple[Tool, str | None, Any]]:
    """Every call the agent will make: (tool, enum parameter or None, value), in order."""
    steps: list[tuple[Tool, str | None, Any]] = []
    for tool in tools:
        properties = _properties(tool.schema)
        param = next((n for n, p in properties.items() if _enum(p)), None)
        if param is None:
            steps.append((tool, None, None))
        else:
            steps.extend((tool, param, value) for value in _enum(properties[param]))
    return steps


def next_call(
    tools: tuple[Tool, ...], calls_made: tuple[tuple[str, JsonObject], ...]
) -> ToolCall | None:
    for tool, param, value in plan(tools):
        made = any(
            name == tool.name and (param is None or args.get(param) == value)
            for name, args in calls_made
        )
        if not made:
            return ToolCall(tool.name, arguments(tool.schema, param, value))
    return None


def arguments(schema: JsonObject, param: str | None = None, value: Any = None) -> JsonObject:
    """Arguments valid against `schema`: required properties plus the planned enum value."""
    return _object(schema, param, value, 0)


def _object(schema: JsonObject, param: str | None, value: Any, depth: int) -> JsonObject:
    properties = _properties(schema)
    listed = schema.get("required")
    required: list[str] = [r for r in listed if isinstance(r, str)] if isinstance(listed, list) else []
    args: JsonObject = {}
    for name, prop in properties.items():
        if name == param:
            args[name] = value
        elif name in required:
            args[name] = _example(name, prop if isinstance(prop, dict) else {}, depth + 1)
    for name in required:
        args.setdefault(name, name)  # required but undeclared: any value will do
    return args


def _example(name: str, schema: JsonObject, depth: int) -> Any:
    if "const" in schema:
        return schema["const"]
    if _enum(schema):
        return _enum(schema)[0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], dict):
            return _example(name, options[0], depth)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "integer" or kind == "number":
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        items = schema.get("items")
        count = min(max(1, int(_num(schema.get("minItems")) or 1)), _MAX_SIZE)
        if schema.get("maxItems") == 0 or depth >= _MAX_DEPTH:
            return []
        return [_example(name, items if isinstance(items, dict) else {}, depth + 1)] * count
    if kind == "object":
        return {} if depth >= _MAX_DEPTH else _object(schema, None, None, depth)
    text = name.ljust(min(int(_num(schema.get("minLength")) or 0), _MAX_SIZE), "x")
    max_length = schema.get("maxLength")
    return text[:max_length] if isinstance(max_length, int) else text


def _number(schema: JsonObject, *, integer: bool) -> int | float:
    low = _num(schema.get("minimum"))
    if low is None and _num(schema.get("exclusiveMinimum")) is not None:
        low = schema["exclusiveMinimum"] + 1
    high = _num(schema.get("maximum"))
    if high is None and _num(schema.get("exclusiveMaximum")) is not None:
        high = schema["exclusiveMaximum"] - 1
    number: int | float = 1 if low is None else low
    if high is not None:
        number = min(number, high)
    return math.ceil(number) if integer else float(number)


def _properties(schema: Any) -> JsonObject:
    """A schema's `properties`, or none when it has no object of them (a schema the model
    cannot read gets calls without arguments, as a lenient model would make)."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    return properties if isinstance(properties, dict) else {}


def _num(value: Any) -> int | float | None:
    # bool is an int subclass, and draft-4 schemas use booleans for exclusiveMinimum
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _enum(schema: Any) -> list[Any]:
    enum = schema.get("enum") if isinstance(schema, dict) else None
    return enum if isinstance(enum, list) else []


def _summary(results: tuple[ToolResult, ...]) -> str:
    if not results:
        return "All tool calls are done."
    quotes = "; ".join(f'{r.name}: "{_excerpt(r.text)}"' for r in results)
    return f"Based on {len(results)} tool results: {quotes}."


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[: _EXCERPT - 3] + "..."


def _words(text: str) -> list[str]:
    return text.split(" ")


def _text(words: list[str], max_tokens: int | None) -> Reply:
    truncated = max_tokens is not None and len(words) > max_tokens
    if max_tokens is not None:
        words = words[:max_tokens]
    tokens = tuple(w if i == 0 else " " + w for i, w in enumerate(words))
    return Reply(tokens, None, truncated)

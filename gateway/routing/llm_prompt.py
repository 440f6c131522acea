"""The Arch-Router prompt protocol: the one user message sent to the router model, and the
tolerant reading of its `{"route": "<name>"}` answer.

The shape follows what Arch-Router-1.5B was trained on (Plano's `RouterModelV1`): the routes
as compact JSON `[{"name", "description"}]` inside `<routes>` tags, the conversation as JSON
`[{"role", "content"}]` (user and assistant text only) inside `<conversation>` tags, and an
answer of `{"route": "<name>"}`, or `{"route": "other"}` when nothing fits.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config import RoutingPreference
from gateway.routing.base import Turn

# The router model's context is small and its latency grows with the prompt: Arch-Router's
# own budget is 2,048 tokens, estimated (cheaply, no tokenizer) as four characters a token.
MAX_PROMPT_TOKENS = 2048
CHARS_PER_TOKEN = 4
# One message may take at most a quarter of the budget, so a pasted file cannot crowd out
# the rest of the conversation (and the latest user message always fits).
MAX_MESSAGE_CHARS = MAX_PROMPT_TOKENS * CHARS_PER_TOKEN // 4
CLIP_MARK = " [...] "

PROMPT_HEAD = """\
You choose the route that best fits a conversation.
The routes you may choose from are listed as JSON inside <routes></routes> tags:
<routes>
"""
PROMPT_MIDDLE = """
</routes>

<conversation>
"""
PROMPT_TAIL = """
</conversation>

Decide which route fits the user's latest intent in the conversation inside the \
<conversation></conversation> tags. Rules:
1. If no route fits the user's latest intent, or that intent has already been fulfilled, \
answer with the route "other": {"route": "other"}.
2. Compare the user's latest intent with the description of each route and take the closest.
3. Use the route's exact name as it is written inside <routes></routes>.

Reply with JSON only, in this form:
{"route": "route_name"}
"""
FIXED_CHARS = len(PROMPT_HEAD) + len(PROMPT_MIDDLE) + len(PROMPT_TAIL)
NO_ROUTE = frozenset({"", "other", "none", "null"})

_FENCE = re.compile(r"```[A-Za-z0-9_-]*")
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)
_ROUTE_FIELD = re.compile(r"""["']?route["']?\s*[:=]\s*(?:"([^"\n]*)"|'([^'\n]*)')""")


class BadAnswer(Exception):
    """No usable answer: an error status, a body that is not a completion, or text that
    names neither a route nor `other`.

    Messages describe the shape only: never the answer's text, which may echo the user's."""


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    window: list[dict[str, str]]  # the conversation as sent, oldest first


def routes_json(preferences: Sequence[RoutingPreference]) -> str:
    """The routes in config order; only name and description (examples are builtin-only)."""
    return orjson.dumps([{"name": p.name, "description": p.description} for p in preferences]).decode()


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Head and tail of a long message: intent is usually stated before or after a paste."""
    if len(text) <= limit:
        return text
    keep = (limit - len(CLIP_MARK)) // 2
    return text[:keep] + CLIP_MARK + text[-keep:]


def _cost(message: dict[str, str]) -> int:
    return len(orjson.dumps(message).decode()) + 1  # the separating comma


def conversation_window(turns: Sequence[Turn], budget_chars: int) -> list[dict[str, str]]:
    """User and assistant text, newest first while it fits; the latest user message always.

    System prompts and tool results are left out, as Arch-Router was trained without them."""
    messages = [
        {"role": t.role, "content": clip(t.text)}
        for t in turns
        if t.role in ("user", "assistant") and t.text.strip()
    ]
    latest = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if latest is None:
        return []
    used = 1 + _cost(messages[latest])  # the list's brackets, less one comma
    chosen = [latest]
    for index in range(len(messages) - 1, -1, -1):
        if index == latest:
            continue
        cost = _cost(messages[index])
        if used + cost > budget_chars:
            if index > latest:  # a long reply after the latest question: skip it, go on to it
                continue
            break  # older history: stop at the first gap so the window stays contiguous
        used += cost
        chosen.append(index)
    return [messages[i] for i in sorted(chosen)]


def build_prompt(routes: str, turns: Sequence[Turn]) -> Prompt | None:
    """The router model's one user message; None when no user message states an intent."""
    budget = MAX_PROMPT_TOKENS * CHARS_PER_TOKEN - FIXED_CHARS - len(routes)
    window = conversation_window(turns, max(budget, MAX_MESSAGE_CHARS + 64))
    if not window:
        return None
    conversation = orjson.dumps(window).decode()
    return Prompt(PROMPT_HEAD + routes + PROMPT_MIDDLE + conversation + PROMPT_TAIL, window)


def answer_token_limit(names: Collection[str]) -> int:
    """Room for `{"route": "<the longest name>"}` inside a code fence: a token is at least
    one character, so the name's length bounds its tokens."""
    return 32 + max((len(name) for name in names), default=0)


def answer_content(body: bytes) -> str:
    """The assistant text of an OpenAI chat completion."""
    try:
        data = orjson.loads(body)
        content = data["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise BadAnswer("not a chat completion") from exc
    if not isinstance(content, str):
        raise BadAnswer("no text in the completion")
    return content


def parse_route(content: str, names: Collection[str]) -> str | None:
    """The route the answer names; None for `other`, an empty route or a name not configured.

    Tolerates code fences, single quotes, reasoning blocks and stray text around the JSON.
    Raises BadAnswer when the answer names nothing at all."""
    text = _FENCE.sub("", _THINKING.sub("", content)).strip()
    if not text:
        raise BadAnswer("empty answer")
    value = _route_value(text)
    if value is None:
        bare = text.strip("\"'` \n.")
        if bare in names or bare.lower() in NO_ROUTE:  # a bare name is an answer too
            value = bare
        else:
            raise BadAnswer("no route in the answer")
    value = value.strip()
    return value if value in names else None


def _route_value(text: str) -> str | None:
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidate = text[start : end + 1]
        for attempt in (candidate, candidate.replace("'", '"')):
            data = _loads(attempt)
            if isinstance(data, dict) and "route" in data:
                route = data["route"]
                if route is None:
                    return ""
                if not isinstance(route, str):
                    raise BadAnswer("route is not a string")
                return route
    match = _ROUTE_FIELD.search(text)
    if match is not None:
        return match.group(1) if match.group(1) is not None else match.group(2)
    return None


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None

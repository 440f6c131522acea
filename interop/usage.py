"""Prompt and cached-prompt tokens from a response body, whichever API shape it has.

Anthropic: `usage.input_tokens` + `cache_read_input_tokens` (+ `cache_creation_input_tokens`),
in a JSON body or the `message_start` / `message_delta` events of a stream. OpenAI Chat:
`usage.prompt_tokens` and `prompt_tokens_details.cached_tokens`. Responses: `usage.input_tokens`
and `input_tokens_details.cached_tokens`, in the body or the `response.completed` event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from gateway.usage import counts_of
from interop.capture import Usage


def from_body(body: bytes, content_type: str) -> Usage | None:
    if "text/event-stream" in content_type:
        return _merge(_usage_of(event) for event in _events(body))
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return _usage_of(data) if isinstance(data, dict) else None


def _events(body: bytes) -> Iterator[dict[str, Any]]:
    for line in body.decode("utf-8", "replace").splitlines():
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[5:].strip())
        except ValueError:
            continue  # [DONE] and friends
        if isinstance(event, dict):
            yield event


def _usage_of(data: dict[str, Any]) -> Usage | None:
    for holder in (data, data.get("message"), data.get("response")):
        if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
            return _tokens(holder["usage"])
    return None


def _tokens(usage: dict[str, Any]) -> Usage | None:
    if not _PROMPT_KEYS & usage.keys():
        return None  # a message_delta with output tokens only
    counts = counts_of(usage)  # the gateway's own reading of every API's usage
    return Usage(counts["prompt_tokens"], counts["cached_prompt_tokens"])


_PROMPT_KEYS = frozenset({"prompt_tokens", "input_tokens", "cache_read_input_tokens"})


def _merge(found: Iterator[Usage | None]) -> Usage | None:
    """A stream may report usage more than once (Anthropic: start, then delta): keep the largest."""
    best: Usage | None = None
    for usage in found:
        if usage is not None and (best is None or usage.prompt >= best.prompt):
            best = usage
    return best


"""OpenAI Chat Completions upstreams: requests pass through with the model id swapped in."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.config import ModelProvider


def request_headers(provider: ModelProvider) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if provider.access_key:
        headers["authorization"] = f"Bearer {provider.access_key}"
    return headers


def chat_request_body(payload: dict[str, Any], raw: bytes, model_id: str) -> bytes:
    """The client's own bytes when the model already matches; re-encoded only when it must change."""
    if payload.get("model") == model_id:
        return raw
    payload = {**payload, "model": model_id}
    return orjson.dumps(payload)


# Where each API puts the most tokens an answer may have.
OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def within_output_cap(payload: dict[str, Any], limit: int) -> dict[str, Any] | None:
    """A copy of a client's `payload` with its max tokens lowered to `limit`, a provider's
    `max_output_tokens` (a harness asks for what its own models allow: Claude Code's 32,000
    to a model that takes 16,384 was a 400 on every turn); None when nothing is past it."""
    over = [key for key in OUTPUT_CAPS if isinstance(payload.get(key), int)
            and not isinstance(payload[key], bool) and payload[key] > limit]
    return {**payload, **dict.fromkeys(over, limit)} if over else None


def max_tokens_field(provider: ModelProvider) -> str:
    """What OpenAI itself calls the answer's token cap: `max_completion_tokens` (its reasoning
    models refuse the older `max_tokens`, which it deprecated); compatible servers mostly
    know only `max_tokens`."""
    return "max_completion_tokens" if provider.provider in ("openai", "azure_openai") else "max_tokens"


class StreamedCalls:
    """Numbers the tool calls of a streamed chat answer, 0, 1, ... in order of appearance.

    OpenAI gives each call an `index` and sends its `id` once, with its first delta. Servers
    differ: some omit `index`, and some (Gemini's OpenAI-compatible endpoint) send each call
    whole, every one as index 0 with its own id. A delta whose id is not the id of the call
    open at its index starts a new call, so two calls never merge into one broken one.
    """

    __slots__ = ("_by_index", "_ids")

    def __init__(self) -> None:
        self._by_index: dict[int, int] = {}  # upstream index -> the call open there
        self._ids: list[str | None] = []  # each call's id, by number

    def number(self, call: dict[str, Any]) -> int:
        given = call.get("id")
        call_id = given if isinstance(given, str) and given else None
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            # No index: a new id is a new call; no id continues the latest call.
            if self._ids and (call_id is None or call_id == self._ids[-1]):
                return len(self._ids) - 1
            return self._new(None, call_id)
        current = self._by_index.get(index)
        if current is not None and (call_id is None or call_id == self._ids[current]
                                    or self._ids[current] is None):
            return current
        return self._new(index, call_id)

    def _new(self, index: int | None, call_id: str | None) -> int:
        number = len(self._ids)
        self._ids.append(call_id)
        if index is not None:
            self._by_index[index] = number
        return number

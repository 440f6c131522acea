"""OpenAI Chat Completions: requests and responses pass through with the model id swapped in."""

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


class UsageScanner:
    """Watches a passed-through stream for `usage` and for its proper end, without parsing
    every chunk.

    OpenAI sends usage in the last chunk (with `stream_options.include_usage`), Anthropic in
    `message_start` and `message_delta`: keeping the head and the tail of the stream finds both.
    A stream whose tail lacks the API's terminator (`[DONE]`, `message_stop`) was cut short
    upstream; `close` then adds `cut_short`, an error event, so no client takes it for whole.
    """

    __slots__ = ("_head", "_tail", "cut_short", "first_chunk", "terminator")
    LIMIT = 4096

    def __init__(self, terminator: bytes, cut_short: bytes) -> None:
        self._head = b""
        self._tail = b""
        self.first_chunk = False
        self.terminator = terminator
        self.cut_short = cut_short

    def feed(self, chunk: bytes) -> bytes:
        self.first_chunk = True
        if len(self._head) < self.LIMIT:
            self._head += chunk[: self.LIMIT - len(self._head)]
        self._tail = (self._tail + chunk)[-self.LIMIT :]
        return chunk

    def close(self) -> bytes:
        return b"" if self.terminator in self._tail else self.cut_short

    @property
    def usage(self) -> dict[str, int] | None:
        prompt = completion = 0
        found = False
        for block in (self._head, self._tail):
            for line in block.split(b"\n"):
                if not line.startswith(b"data:") or b'"usage"' not in line:
                    continue
                try:
                    event = orjson.loads(line[5:])
                except orjson.JSONDecodeError:
                    continue  # a line cut by the head/tail window
                usage = _find_usage(event)
                if usage is None:
                    continue
                found = True
                prompt = max(prompt, int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0))
                completion = max(
                    completion, int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
                )
        return {"prompt_tokens": prompt, "completion_tokens": completion} if found else None


def _find_usage(event: Any) -> dict[str, Any] | None:
    if not isinstance(event, dict):
        return None
    usage = event.get("usage")
    if usage is None and isinstance(event.get("message"), dict):
        usage = event["message"].get("usage")
    return usage if isinstance(usage, dict) else None


def usage_of(body: bytes) -> dict[str, int] | None:
    """Token counts from a whole (non-streamed) response of either API."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = _find_usage(data)
    if usage is None:
        return None
    return {
        "prompt_tokens": int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
    }

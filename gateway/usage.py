"""Token counts: from a whole response body of either API, and from a passed-through stream
watched on its way to the client (which also tells whether that stream ended properly).

Counts are `prompt_tokens` (every prompt token, cached or not: Anthropic reports its cache
reads and writes apart from `input_tokens`, so they are added back), `completion_tokens` and
`cached_prompt_tokens` (Anthropic `cache_read_input_tokens`, OpenAI
`prompt_tokens_details.cached_tokens`): cached / prompt is the prompt-cache hit ratio."""

from __future__ import annotations

from typing import Any

import orjson


class UsageScanner:
    """Watches a passed-through stream for `usage` and for its proper end, without parsing
    every chunk.

    OpenAI sends usage in the last chunk (with `stream_options.include_usage`), Anthropic in
    `message_start` and `message_delta`: keeping the head and the tail of the stream finds both.
    A stream whose tail lacks the API's terminator (`[DONE]`, `message_stop`) was cut short
    upstream; `close` then adds `cut_short`, an error event, so no client takes it for whole.
    """

    __slots__ = ("_head", "_recent", "_recent_size", "cut_short", "terminator")
    LIMIT = 4096

    def __init__(self, terminator: bytes, cut_short: bytes) -> None:
        self._head = b""
        self._recent: list[bytes] = []  # the newest chunks, joined only now and then
        self._recent_size = 0
        self.terminator = terminator
        self.cut_short = cut_short

    def feed(self, chunk: bytes) -> bytes:
        if len(self._head) < self.LIMIT:
            self._head += chunk[: self.LIMIT - len(self._head)]
        self._recent.append(chunk)
        self._recent_size += len(chunk)
        if self._recent_size > 4 * self.LIMIT:
            self._tail()
        return chunk

    def _tail(self) -> bytes:
        """The last LIMIT bytes (compacting the chunk list into them)."""
        tail = b"".join(self._recent)[-self.LIMIT :]
        self._recent = [tail]
        self._recent_size = len(tail)
        return tail

    def close(self) -> bytes:
        return b"" if self.terminator in self._tail() else self.cut_short

    @property
    def usage(self) -> dict[str, int] | None:
        # A short stream's head and tail are the same bytes: read them once.
        tail = self._tail()
        blocks = (tail,) if tail.startswith(self._head) else (self._head, tail)
        prompt = completion = cached = 0
        found = False
        for block in blocks:
            for line in _lines_with(block, b'"usage"'):
                if not line.startswith(b"data:"):
                    continue
                try:
                    event = orjson.loads(line[5:])
                except orjson.JSONDecodeError:
                    continue  # a line cut by the head/tail window
                usage = _find_usage(event)
                if usage is None:
                    continue
                found = True
                counts = counts_of(usage)
                prompt = max(prompt, counts["prompt_tokens"])
                completion = max(completion, counts["completion_tokens"])
                cached = max(cached, counts["cached_prompt_tokens"])
        if not found:
            return None
        return {"prompt_tokens": prompt, "completion_tokens": completion, "cached_prompt_tokens": cached}


def _lines_with(block: bytes, needle: bytes) -> list[bytes]:
    """The lines of `block` containing `needle`, found without splitting every line."""
    lines = []
    start = 0
    while (at := block.find(needle, start)) != -1:
        begin = block.rfind(b"\n", 0, at) + 1
        end = block.find(b"\n", at)
        end = len(block) if end == -1 else end
        lines.append(block[begin:end])
        start = end
    return lines


def token_count(value: Any) -> int:
    """A token count, or 0 for anything that is not a count (it feeds monotonic counters)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def counts_of(usage: dict[str, Any]) -> dict[str, int]:
    """One `usage` object of any client API as the gateway's three counts."""
    if "prompt_tokens" in usage or "completion_tokens" in usage:  # OpenAI Chat Completions
        details = usage.get("prompt_tokens_details")
        cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return {"prompt_tokens": token_count(usage.get("prompt_tokens")),
                "completion_tokens": token_count(usage.get("completion_tokens")),
                "cached_prompt_tokens": cached}
    details = usage.get("input_tokens_details")
    if isinstance(details, dict):  # OpenAI Responses: its input_tokens include the cached ones
        return {"prompt_tokens": token_count(usage.get("input_tokens")),
                "completion_tokens": token_count(usage.get("output_tokens")),
                "cached_prompt_tokens": token_count(details.get("cached_tokens"))}
    cached = token_count(usage.get("cache_read_input_tokens"))  # Anthropic: input_tokens exclude them
    written = token_count(usage.get("cache_creation_input_tokens"))
    prompt = token_count(usage.get("input_tokens")) + written + cached
    return {"prompt_tokens": prompt, "completion_tokens": token_count(usage.get("output_tokens")),
            "cached_prompt_tokens": cached}


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
    return None if usage is None else counts_of(usage)

"""A prompt cache per model, as providers keep one: a request whose conversation starts with
a prefix this model has already seen reads that prefix from the cache, and the usage says
so (OpenAI `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`).

A prefix lives only in the cache of the model that saw it, so a session that switches model
starts cold: that is the value affinity buys, and what the demo and the dashboards show.
Bounded: each model keeps its most recently used prefixes, and only so many models are kept.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Any

import orjson

MAX_PREFIXES_PER_MODEL = 20_000
MAX_MODELS = 64


def prefixes(body: dict[str, Any]) -> list[tuple[bytes, int]]:
    """(digest of the conversation up to this part, its size in bytes) for each part in the
    order providers cache them: tools, system prompt, then each message."""
    parts: list[Any] = []
    if body.get("tools"):
        parts.append(body["tools"])
    if body.get("system"):
        parts.append(body["system"])
    messages = body.get("messages")
    parts += messages if isinstance(messages, list) else []
    digest, size, out = b"", 0, []
    for part in parts:
        encoded = orjson.dumps(part, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.blake2b(digest + encoded, digest_size=16).digest()
        size += len(encoded)
        out.append((digest, size))
    return out


class PrefixCache:
    def __init__(self, per_model: int = MAX_PREFIXES_PER_MODEL, models: int = MAX_MODELS) -> None:
        self.per_model = per_model
        self.max_models = models
        self._models: OrderedDict[str, OrderedDict[bytes, None]] = OrderedDict()

    def read(self, model: str, body: dict[str, Any], prompt_tokens: int) -> int:
        """The prompt tokens this request reads from `model`'s cache (then caches its own
        prefixes): the longest known prefix's share of the prompt."""
        parts = prefixes(body)
        if not parts:
            return 0
        cache = self._models.get(model)
        if cache is None:
            cache = self._models[model] = OrderedDict()
            if len(self._models) > self.max_models:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(model)
        hit = 0
        for digest, size in parts:
            if digest in cache:
                hit = size
                cache.move_to_end(digest)
            else:
                cache[digest] = None
        while len(cache) > self.per_model:
            cache.popitem(last=False)
        total = parts[-1][1]
        # Never the whole prompt: the newest part is always read afresh.
        return min(math.floor(prompt_tokens * hit / total), prompt_tokens - 1) if hit else 0

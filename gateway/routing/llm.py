"""The `llm` router: asks a router model (Arch-Router-1.5B under vLLM or Ollama, or any
OpenAI-compatible model) which preference fits the conversation.

A slow, failing or confused router model never fails a request: a timeout, an upstream error
or an answer that names nothing falls back to the builtin router (`source="fallback"`, logged).
Answers are remembered in a small LRU keyed by a hash of the prompt (routes and conversation
window), and identical requests in flight together share one question, so a retry of the
same conversation does not ask twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence

import orjson

from gateway.config import Config, ModelProvider, RouterConfig, RoutingPreference
from gateway.errors import GatewayError
from gateway.providers.openai import request_headers
from gateway.routing.base import RouteChoice, Router, Turn
from gateway.routing.builtin import BuiltinRouter
from gateway.routing.llm_prompt import (
    BadAnswer,
    answer_content,
    answer_token_limit,
    build_prompt,
    parse_route,
    routes_json,
)
from gateway.upstream import UpstreamClient

logger = logging.getLogger("gateway.routing.llm")
CACHE_ENTRIES = 1024


class DecisionCache:
    """The last `size` decisions by key, least recently used dropped first."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, str | None] = OrderedDict()

    def get(self, key: bytes) -> tuple[bool, str | None]:
        if key not in self._entries:
            return False, None
        self._entries.move_to_end(key)
        return True, self._entries[key]

    def put(self, key: bytes, route: str | None) -> None:
        self._entries[key] = route
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


class LLMRouter:
    name = "llm"

    def __init__(
        self,
        preferences: Sequence[RoutingPreference],
        provider: ModelProvider,
        config: RouterConfig,
        upstream: UpstreamClient,
        fallback: Router,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.names = frozenset(p.name for p in preferences)
        self.routes = routes_json(preferences)
        self.provider = provider
        self.url = provider.api_base + "/chat/completions"
        self.headers = request_headers(provider)
        self.timeout_ms = config.timeout_ms
        self.upstream = upstream
        self.fallback = fallback
        self.max_tokens = answer_token_limit(self.names)
        self.cache = DecisionCache(cache_entries)
        self._inflight: dict[bytes, asyncio.Future[str | None]] = {}

    @classmethod
    def from_config(cls, config: Config, upstream: UpstreamClient) -> LLMRouter:
        """The router `routing.router` describes, with the builtin router as its fallback."""
        settings = config.routing.router
        provider = config.resolve(settings.model) if settings.model else None
        if provider is None:  # the loader refuses such a config; this guards direct callers
            raise ValueError(f"the llm router's model {settings.model!r} is not configured")
        builtin = BuiltinRouter(config.preferences, settings.threshold)
        return cls(config.preferences, provider, settings, upstream, builtin)

    async def choose(self, turns: list[Turn]) -> RouteChoice:
        prompt = build_prompt(self.routes, turns)
        if prompt is None:  # no user message: nothing states an intent to route on
            return RouteChoice(None)
        key = hashlib.blake2b(prompt.text.encode(), digest_size=16).digest()
        found, route = self.cache.get(key)
        if found:
            return RouteChoice(route)
        # Identical requests in flight together (a client's hasty retry) share one question.
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._decide(key, prompt.text))
            task.add_done_callback(_retrieve)
            self._inflight[key] = task
        try:
            route = await asyncio.shield(task)  # a cancelled request leaves it to the others
        except Exception as exc:
            logger.warning(
                "llm router (model %s): %s; the builtin router decided instead",
                self.provider.model, self._describe(exc),
            )
            choice = await self.fallback.choose(turns)
            return RouteChoice(choice.route, "fallback")
        return RouteChoice(route)

    async def _decide(self, key: bytes, prompt: str) -> str | None:
        """The router model's answer within the budget, remembered; failures are not."""
        try:
            route = await asyncio.wait_for(self._ask(prompt), self.timeout_ms / 1000)
        finally:
            self._inflight.pop(key, None)
        self.cache.put(key, route)
        return route

    async def _ask(self, prompt: str) -> str | None:
        body = orjson.dumps({
            "model": self.provider.model_id,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "stream": False,
        })
        response = await self.upstream.post(self.url, self.headers, body)
        try:
            if response.status != 200:
                raise BadAnswer(f"router model answered HTTP {response.status}")
            raw = await response.read()
        except BaseException:
            response.close()  # cancelled or refused mid-response: do not pool the connection
            raise
        return parse_route(answer_content(raw), self.names)

    def _describe(self, exc: Exception) -> str:
        """Why the router model was not used, without its answer, the prompt or any key."""
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.timeout_ms} ms"
        if isinstance(exc, BadAnswer | GatewayError):
            return str(exc)
        return f"unexpected {type(exc).__name__}"

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        self._inflight.clear()
        self.cache.clear()


def _retrieve(task: asyncio.Future[str | None]) -> None:
    """Mark a shared question's failure as seen: its waiters may all have gone."""
    if not task.cancelled():
        task.exception()

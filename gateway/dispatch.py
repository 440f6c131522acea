"""Calling the provider: the decision's models in rank order, each with retries, all before
any byte reaches the client; provider errors mapped to what the client should see."""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass

import orjson

from gateway.config import Config, ModelProvider
from gateway.errors import UpstreamError, UpstreamStatusError
from gateway.metrics import Metrics
from gateway.parse import ChatRequest
from gateway.providers import ClientApi, Exchange, exchange_for
from gateway.routing import Decision
from gateway.upstream import UpstreamClient, UpstreamResponse

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 10.0
# Statuses the client is told as they are: the request itself was refused upstream.
CLIENT_STATUSES = frozenset({400, 409, 413, 422, 429})
_SECRET_LIKE = re.compile(r"\b(sk|pk|key)-[A-Za-z0-9_\-*.]{6,}")


@dataclass(frozen=True, slots=True)
class Served:
    response: UpstreamResponse
    provider: ModelProvider
    exchange: Exchange



class Dispatcher:
    def __init__(self, config: Config, upstream: UpstreamClient, metrics: Metrics) -> None:
        self.config = config
        self.upstream = upstream
        self.metrics = metrics

    async def call(self, request: ChatRequest, decision: Decision, api: ClientApi) -> Served:
        """Try the decision's models in rank order; each with retries before any byte is sent."""
        last: UpstreamError | None = None
        for model in decision.models:
            provider = self.config.models[model]
            exchange = exchange_for(api, provider.interface)
            try:
                response = await self._send(provider, exchange, request)
            except UpstreamError as exc:
                last = exc
                if exc.request_at_fault:
                    raise  # another model would refuse it too
                continue
            return Served(response, provider, exchange)
        assert last is not None
        raise last

    async def _send(
        self, provider: ModelProvider, exchange: Exchange, request: ChatRequest
    ) -> UpstreamResponse:
        url = provider.api_base + exchange.path
        body = exchange.request_body(request.payload, request.raw, provider.model_id)
        headers = exchange.headers(provider)
        retries = self.config.upstream.max_retries
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = await self.upstream.post(url, headers, body)
            except UpstreamError as exc:
                self.metrics.upstream_error(provider.provider, exc.reason)
                if exc.reason != "connect" or attempt >= retries:
                    raise
            else:
                if 200 <= response.status < 300:
                    return response  # a redirect is an error too: following it would send the key on
                error = status_error(provider, response.status, await response.read())
                self.metrics.upstream_error(provider.provider, error.reason)
                if response.status not in RETRY_STATUSES or attempt >= retries:
                    raise error
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                    raise error
            attempt += 1
            await asyncio.sleep(retry_after if retry_after is not None else self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        base = self.config.upstream.retry_backoff_ms / 1000 * (2 ** (attempt - 1))
        return float(base * random.uniform(0.5, 1.5))  # jitter: replicas must not retry in step


def parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def status_error(provider: ModelProvider, status: int, body: bytes) -> UpstreamStatusError:
    """The provider's error, with its message, as what the client should see."""
    message = scrub(upstream_message(body), provider.access_key)
    text = f"upstream {provider.model} returned {status}: {message}"
    if status in CLIENT_STATUSES:
        reason = "rate_limited" if status == 429 else "rejected"  # rejected: `request_at_fault`
        return UpstreamStatusError(status, text, reason=reason, code="upstream_error")
    if status in (401, 403):
        return UpstreamStatusError(502, text, reason="auth", code="upstream_auth_failed")
    if status in (503, 504):
        return UpstreamStatusError(status, text, reason=f"status_{status}", code="upstream_error")
    return UpstreamStatusError(502, text, reason=f"status_{status // 100}xx", code="upstream_error")


def upstream_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace") or "no message"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return "no message"


def scrub(message: str, secret: str | None) -> str:
    """Providers echo parts of bad keys in their messages; none of it may reach the client."""
    if secret:
        message = message.replace(secret, "***")
    return _SECRET_LIKE.sub("***", message)[:500]

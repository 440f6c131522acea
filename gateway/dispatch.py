"""Calling the provider: the decision's models in rank order, each with retries, all before
any byte reaches the client; provider errors mapped to what the client should see."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

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
# Passed to the client on a 429 or 503 the gateway gives up on, for its own backoff.
RETRY_HEADERS = frozenset({"retry-after", "retry-after-ms"})
RATE_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
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
        try:
            for model in decision.models:
                provider = self.config.models[model]
                exchange = exchange_for(api, provider.interface, self.config.upstream.max_sse_event_bytes)
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
        finally:
            last = None  # raised, it holds this frame: without this, a cycle only the GC frees

    async def _send(
        self, provider: ModelProvider, exchange: Exchange, request: ChatRequest
    ) -> UpstreamResponse:
        url = provider.api_base + exchange.path
        body = exchange.request_body(request.payload, request.raw, provider.model_id)
        headers = exchange.headers(provider)
        retries = self.config.upstream.max_retries
        attempt = 0
        while True:
            hint: float | None = None
            try:
                response = await self.upstream.post(url, headers, body)
            except UpstreamError as exc:
                self.metrics.upstream_error(provider.provider, exc.reason)
                # Only a failed connect is retried: nothing of the request left the gateway. A
                # reset or a timeout after the request was written may follow a provider that
                # read it, and would bill it twice.
                if exc.reason != "connect" or attempt >= retries:
                    raise
            else:
                if 200 <= response.status < 300:
                    return response  # a redirect is an error too: following it would send the key on
                message = await response.read_some(self.config.upstream.max_error_body_bytes)
                error = status_error(provider, response.status, message, response.headers)
                self.metrics.upstream_error(provider.provider, error.reason)
                if response.status not in RETRY_STATUSES or attempt >= retries:
                    raise error
                hint = retry_hint(response.headers)
                if hint is not None and hint > MAX_RETRY_AFTER_S:
                    raise error  # the client is told how long to wait (its Retry-After)
            attempt += 1
            # The provider's hint raises the backoff, never lowers it: Retry-After: 0 from many
            # clients at once must not bring them all straight back.
            await asyncio.sleep(max(hint or 0.0, self._backoff(attempt)))

    def _backoff(self, attempt: int) -> float:
        base = self.config.upstream.retry_backoff_ms / 1000 * (2 ** (attempt - 1))
        return float(base * random.uniform(0.5, 1.5))  # jitter: replicas must not retry in step


def retry_hint(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` (OpenAI's) or `retry-after` (seconds or a date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def passed_headers(status: int, headers: Mapping[str, str]) -> dict[str, str]:
    """The provider's rate-limit signals that a client's own backoff reads, on a 429 or 503."""
    if status not in (429, 503):
        return {}
    return {name: value for name, value in headers.items()
            if name in RETRY_HEADERS or name.startswith(RATE_LIMIT_PREFIXES)}


def status_error(
    provider: ModelProvider, status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> UpstreamStatusError:
    """The provider's error, with its message, as what the client should see."""
    message = upstream_message(body)
    if message is None:  # a proxy's or load balancer's page: not a message meant for clients
        text = f"upstream {provider.model} returned {status} with a non-JSON body"
    else:
        text = f"upstream {provider.model} returned {status}: {scrub(message, provider.access_key)}"
    extra = passed_headers(status, headers or {})
    if status in CLIENT_STATUSES:
        reason = "rate_limited" if status == 429 else "rejected"  # rejected: `request_at_fault`
        return UpstreamStatusError(status, text, reason=reason, code="upstream_error", headers=extra)
    if status in (401, 403):
        return UpstreamStatusError(502, text, reason="auth", code="upstream_auth_failed")
    if status in (503, 504):
        return UpstreamStatusError(status, text, reason=f"status_{status}", code="upstream_error",
                                   headers=extra)
    return UpstreamStatusError(502, text, reason=f"status_{status // 100}xx", code="upstream_error")


def upstream_message(body: bytes) -> str | None:
    """The message in a provider's JSON error; None when the body is not JSON at all."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None if body.strip() else "no message"
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

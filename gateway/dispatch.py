"""The one attempt loop: a plan's models in rank order, each with retries, all before any
byte reaches the client; the pin moved (compare-and-set) when the plan allows and another
model serves; provider errors mapped to what the client should see."""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, replace

import orjson

from gateway.affinity import AffinityStore, Pin, Pinned
from gateway.apis import ClientApi, ClientRequest, Exchange
from gateway.config import Config, ModelProvider
from gateway.decider import Decider, Plan
from gateway.errors import UpstreamError, UpstreamStatusError
from gateway.metrics import Metrics
from gateway.routing import Decision
from gateway.tracing import Tracer
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
    def __init__(
        self, config: Config, upstream: UpstreamClient, decider: Decider, store: AffinityStore,
        metrics: Metrics, tracer: Tracer | None = None,
    ) -> None:
        self.config = config
        self.upstream = upstream
        self.decider = decider
        self.store = store
        self.metrics = metrics
        self.tracer = tracer

    async def run(self, request: ClientRequest, plan: Plan, api: ClientApi) -> tuple[Served, Plan]:
        """Serve `plan`; returns what served and the plan as it stands after (a moved pin)."""
        try:
            served = await self._first_to_serve(request, plan.decision.models, api)
        except UpstreamError as failure:
            if failure.request_at_fault or not plan.may_reroute:  # a moved pin would not help
                raise
            moved = await self._reroute(request, plan)
            if moved is None:
                raise
            return await self._first_to_serve(request, moved.decision.models, api), moved
        if plan.may_follow and served.provider.model != plan.decision.model:
            plan = await self._follow(plan, served.provider.model)
        return served, plan

    async def _first_to_serve(
        self, request: ClientRequest, models: tuple[str, ...], api: ClientApi
    ) -> Served:
        last: UpstreamError | None = None
        for model in models:
            provider = self.config.models[model]
            exchange = api.exchange(provider.interface)
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

    async def _follow(self, plan: Plan, model: str) -> Plan:
        """A first turn served by a fallback: the pin moves to it, so the session's later
        turns go where its context now is."""
        assert plan.key is not None
        route = plan.decision.route
        await self._move(plan.key, Pin(plan.decision.model, route), Pin(model, route))
        decision = Decision(route, (model,), plan.decision.source)
        return replace(plan, decision=decision, may_follow=False, rerouted_from=plan.decision.model)

    async def _reroute(self, request: ClientRequest, plan: Plan) -> Plan | None:
        """Route again without the failed model and move the pin, compare-and-set, so replicas
        rerouting the same session at once still agree."""
        assert plan.key is not None
        failed = plan.decision.model
        fresh = await self.decider.route(request)
        models = [m for m in fresh.models if m != failed]
        if not models:
            models = [m for m in (self.config.default_model,) if m != failed]
        if not models:
            return None
        pinned = await self._move(plan.key, Pin(failed, plan.decision.route), Pin(models[0], fresh.route))
        if pinned.pin.model == failed:
            return None
        decision = Decision(pinned.pin.route, (pinned.pin.model,), fresh.source)
        return Plan(decision, "degraded" if pinned.degraded else "new", plan.key, rerouted_from=failed)

    async def _move(self, key: str, old: Pin, new: Pin) -> Pinned:
        """Compare-and-set the pin from `old` to `new`; the pin that stands comes back."""
        pinned = await self.store.repin(key, old, new)
        self.metrics.affinity("new" if pinned.created else "race_lost")
        return pinned

    async def _send(
        self, provider: ModelProvider, exchange: Exchange, request: ClientRequest
    ) -> UpstreamResponse:
        url = provider.api_base + exchange.path
        body = exchange.request_body(request.payload, request.raw, provider.model_id)
        headers = exchange.headers(provider)
        retries = self.config.upstream.max_retries
        attempt = 0
        while True:
            retry_after: float | None = None
            # A span per attempt, its traceparent in `headers`, when the request is traced.
            span = None if self.tracer is None else self.tracer.attempt(provider, attempt, headers)
            try:
                response = await self.upstream.post(url, headers, body)
            except UpstreamError as exc:
                if span is not None:
                    span.failed(exc.reason)
                self.metrics.upstream_error(provider.provider, exc.reason)
                if exc.reason != "connect" or attempt >= retries:
                    raise
            else:
                if span is not None:
                    span.answered(response.status)
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

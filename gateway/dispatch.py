"""The one attempt loop: a plan's models in rank order, each with retries, all before any
byte reaches the client; the pin moved (compare-and-set) when the plan allows and another
model serves; provider errors mapped to what the client should see."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime

import orjson

from gateway.affinity import AffinityStore, Pin, Pinned
from gateway.apis import ClientApi, ClientRequest, Exchange
from gateway.config import Config, ModelProvider
from gateway.decider import AffinityStatus, Decider, Plan
from gateway.errors import UpstreamError, UpstreamStatusError
from gateway.metrics import Metrics
from gateway.providers.anthropic_wire import openai_error_message
from gateway.providers.openai import within_output_cap
from gateway.routing import Decision
from gateway.tracing import Tracer
from gateway.upstream import UpstreamClient, UpstreamResponse

Forward = tuple[tuple[str, str, str], ...]  # (provider family, header name, value)
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

    async def run(
        self, request: ClientRequest, plan: Plan, api: ClientApi, forward: Forward = ()
    ) -> tuple[Served, Plan]:
        """Serve `plan`; returns what served and the plan as it stands after (a moved pin).
        `forward`: client headers for providers of their family (`anthropic-beta`, ...)."""
        try:
            served = await self._first_to_serve(request, plan.decision.models, api, forward)
        except UpstreamError as failure:
            if failure.request_at_fault or not plan.may_reroute:  # a moved pin would not help
                raise
            moved = await self._reroute(request, plan)
            if moved is None:
                raise
            return await self._first_to_serve(request, moved.decision.models, api, forward), moved
        if plan.may_follow and served.provider.model != plan.decision.model:
            try:
                plan = await self._follow(plan, served.provider.model)
            except BaseException:  # cancelled (the client left) while the store answered: nobody
                served.response.close()  # else holds the response, so its connection goes back now
                raise
        return served, plan

    async def _first_to_serve(
        self, request: ClientRequest, models: tuple[str, ...], api: ClientApi, forward: Forward
    ) -> Served:
        last: UpstreamError | None = None
        try:
            for model in models:
                provider = self.config.resolve(model)
                assert provider is not None  # plans name configured models (or a wildcard's)
                exchange = api.exchange(provider)
                try:
                    response = await self._send(provider, exchange, request, api, forward)
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

    async def _follow(self, plan: Plan, model: str) -> Plan:
        """A first turn served by a fallback: the pin moves to it, so the session's later
        turns go where its context now is."""
        assert plan.key is not None
        route = plan.decision.route
        await self._move(plan, Pin(plan.decision.model, route), Pin(model, route))
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
        pinned = await self._move(plan, Pin(failed, plan.decision.route), Pin(models[0], fresh.route))
        if pinned.pin.model == failed:
            return None
        decision = Decision(pinned.pin.route, (pinned.pin.model,), fresh.source)
        # Lost the compare-and-set: served on the pin another replica moved it to, a hit.
        status: AffinityStatus = "degraded" if pinned.degraded else "new" if pinned.created else "hit"
        return Plan(decision, status, plan.key, rerouted_from=failed, session=plan.session,
                    listing=plan.listing)

    async def _move(self, plan: Plan, old: Pin, new: Pin) -> Pinned:
        """Compare-and-set the pin from `old` to `new`; the pin that stands comes back."""
        assert plan.key is not None
        pinned = await self.store.repin(plan.key, old, new, plan.listing)
        self.metrics.affinity("new" if pinned.created else "race_lost")
        return pinned

    async def _send(
        self, provider: ModelProvider, exchange: Exchange, request: ClientRequest, api: ClientApi,
        forward: Forward,
    ) -> UpstreamResponse:
        url = provider.api_base + exchange.path
        drops: list[str] = []
        if provider.max_output_tokens is not None:  # once here, for every API and exchange
            capped = within_output_cap(request.payload, provider.max_output_tokens)
            if capped is not None:
                request = replace(request, payload=capped, raw=orjson.dumps(capped))
        body = exchange.request_body(request, provider, drops)
        for what in drops:
            self.metrics.translation_drop(api.name, what)
        headers = exchange.headers(provider)
        if forward:
            with_client_headers(headers, forward, provider.interface)
        retries = self.config.upstream.max_retries
        attempt = 0
        while True:
            hint: float | None = None
            # A span per attempt, its traceparent in `headers`, when the request is traced.
            span = None if self.tracer is None else self.tracer.attempt(provider, attempt, headers)
            try:
                response = await self.upstream.post(url, headers, body)
            except UpstreamError as exc:
                if span is not None:
                    span.failed(exc.reason)
                self.metrics.upstream_error(provider.provider, exc.reason)
                # Only a failed connect is retried: nothing of the request left the gateway. A
                # reset or a timeout after the request was written may follow a provider that
                # read it, and would bill it twice.
                if exc.reason != "connect" or attempt >= retries:
                    raise
            else:
                if span is not None:
                    span.answered(response.status)
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


def with_client_headers(headers: dict[str, str], forward: Forward, interface: str) -> None:
    """A provider's own family of client headers goes through: `anthropic-version` as the
    client sent it, every `anthropic-beta` (or `OpenAI-Beta`) joined as one list."""
    for family, name, value in forward:
        if family != interface:
            continue
        if name.endswith("-beta") and name in headers:
            headers[name] += "," + value
        else:
            headers[name] = value


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
    return openai_error_message(data) or "no message"


def scrub(message: str, secret: str | None) -> str:
    """Providers echo parts of bad keys in their messages; none of it may reach the client."""
    if secret:
        message = message.replace(secret, "***")
    return _SECRET_LIKE.sub("***", message)[:500]

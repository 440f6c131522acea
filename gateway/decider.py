"""Deciding a request's model: the session's pin if it has one, else a fresh route, pinned
first-writer-wins so that replicas racing on a session's first turn agree."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from gateway.affinity import AffinityStore, Pin, Pinned, pin_key
from gateway.affinity.base import tenant_tag
from gateway.config import Config
from gateway.errors import NotFound
from gateway.metrics import Metrics
from gateway.parse import ChatRequest
from gateway.routing import Decision, Router, candidates

AffinityStatus = Literal["new", "hit", "none", "degraded"]
# Tenants whose key tag is kept (a hash each, else on every request); past it, start over.
TENANT_TAGS = 10_000


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    status: AffinityStatus
    key: str | None  # the pin key, when the request carried an affinity id
    rerouted_from: str | None = None  # the pinned model that failed, when the pin was moved



class Decider:
    def __init__(
        self, config: Config, store: AffinityStore, router: Router, metrics: Metrics
    ) -> None:
        self.config = config
        self.store = store
        self.router = router
        self.metrics = metrics
        self._tags: dict[str, str] = {}

    async def decide(self, request: ChatRequest, affinity_id: str | None, tenant: str) -> Outcome:
        """The pin if there is one; else a fresh route, pinned first-writer-wins."""
        requested = request.requested_model
        if requested is not None and self.config.resolve(requested) is None:
            raise NotFound(
                f"model {requested!r} is not configured", param="model", code="model_not_found"
            )
        if affinity_id is None:
            return Outcome(await self.route(request), "none", None)
        tag = self._tags.get(tenant)
        if tag is None:
            if len(self._tags) >= TENANT_TAGS:
                self._tags.clear()
            tag = self._tags[tenant] = tenant_tag(tenant)
        key = pin_key(tenant, affinity_id, tag)
        started = time.perf_counter()
        lookup = await self.store.get(key)
        self.metrics.store_time(self.store.name, time.perf_counter() - started)
        if lookup.degraded:
            self.metrics.affinity("degraded")
        pin = lookup.pin
        if pin is not None and pin.model in self.config.models:
            self.metrics.affinity("hit")
            decision = Decision(pin.route, (pin.model,), "affinity")
            self.metrics.decision(pin.route, pin.model, "affinity")
            return Outcome(decision, "degraded" if lookup.degraded else "hit", key)
        if pin is not None:  # pinned to a model that has left the config: route afresh
            await self.store.delete(key)
        decision = await self.route(request)
        started = time.perf_counter()
        pinned = await self.store.pin(key, Pin(decision.model, decision.route))
        self.metrics.store_time(self.store.name, time.perf_counter() - started)
        if pinned.evicted:
            self.metrics.affinity("evicted", pinned.evicted)
        if pinned.degraded and not lookup.degraded:
            self.metrics.affinity("degraded")
        status: AffinityStatus = "degraded" if pinned.degraded else "new"
        if pinned.created:
            self.metrics.affinity("new")
            # The route's fallbacks stay: nothing of the session lives on any model yet, so if
            # the first model fails the turn goes to the next, and `follow` moves the pin there.
            return Outcome(decision, status, key)
        self.metrics.affinity("race_lost")  # another replica pinned this session first: serve its choice
        served = Decision(pinned.pin.route, (pinned.pin.model,), decision.source)
        return Outcome(served, "degraded" if pinned.degraded else "hit", key)

    async def follow(self, outcome: Outcome, model: str) -> Outcome:
        """A first turn served by a fallback model: the pin moves to it (compare-and-set), so the
        session's later turns go where its context now is."""
        assert outcome.key is not None
        route = outcome.decision.route
        await self._move(outcome.key, Pin(outcome.decision.model, route), Pin(model, route))
        decision = Decision(route, (model,), outcome.decision.source)
        return Outcome(decision, outcome.status, outcome.key, rerouted_from=outcome.decision.model)

    async def reroute(self, request: ChatRequest, outcome: Outcome, failed: str) -> Outcome | None:
        """`on_pinned_failure: reroute`: route again without the failed model and move the pin,
        compare-and-set, so replicas rerouting the same session at once still agree."""
        if outcome.key is None or self.config.routing.on_pinned_failure != "reroute":
            return None
        fresh = await self.route(request)
        models = [m for m in fresh.models if m != failed]
        if not models:
            models = [m for m in (self.config.default_model,) if m != failed]
        if not models:
            return None
        old = Pin(failed, outcome.decision.route)
        pinned = await self._move(outcome.key, old, Pin(models[0], fresh.route))
        if pinned.pin.model == failed:
            return None
        decision = Decision(pinned.pin.route, (pinned.pin.model,), fresh.source)
        return Outcome(decision, "degraded" if pinned.degraded else "new", outcome.key, rerouted_from=failed)

    async def _move(self, key: str, old: Pin, new: Pin) -> Pinned:
        """Compare-and-set the pin from `old` to `new`; the pin that stands comes back."""
        pinned = await self.store.repin(key, old, new)
        self.metrics.affinity("new" if pinned.created else "race_lost")
        return pinned

    async def route(self, request: ChatRequest) -> Decision:
        started = time.perf_counter()
        choice = await self.router.choose(request.turns)
        self.metrics.router_time(self.router.name, time.perf_counter() - started)
        models = candidates(self.config, choice.route, request.requested_model)
        self.metrics.decision(choice.route, models[0], choice.source)
        return Decision(choice.route, models, choice.source)


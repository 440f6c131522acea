"""Deciding a request's plan: the session's pin if it has one, else a fresh route, pinned
first-writer-wins so that replicas racing on a session's first turn agree. The plan says
which models to try in order and whether the pin may move; `dispatch` runs it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from gateway.affinity import AffinityStore, Pin, pin_key
from gateway.apis import ClientRequest
from gateway.config import Config
from gateway.errors import NotFound
from gateway.metrics import Metrics
from gateway.routing import Decision, Router, candidates

AffinityStatus = Literal["new", "hit", "none", "degraded"]


@dataclass(frozen=True, slots=True)
class Plan:
    decision: Decision  # the models to try, in order: the first is the plan, the rest fallbacks
    status: AffinityStatus
    key: str | None = None  # the pin key, when the request belongs to a session
    # A new session's pin follows the fallback that served its first turn: nothing of the
    # session lives on any model yet.
    may_follow: bool = False
    # `on_pinned_failure: reroute`: a failing pinned model is replaced by a fresh route's.
    may_reroute: bool = False
    rerouted_from: str | None = None  # the planned model that did not serve, when the pin moved
    affinity_source: str | None = None  # said in x-model-affinity-source, when not the header


class Decider:
    def __init__(
        self, config: Config, store: AffinityStore, router: Router, metrics: Metrics
    ) -> None:
        self.config = config
        self.store = store
        self.router = router
        self.metrics = metrics
        self.reroute = config.routing.on_pinned_failure == "reroute"

    async def plan(self, request: ClientRequest, affinity_id: str | None, tenant: str) -> Plan:
        """The pin if there is one; else a fresh route, pinned first-writer-wins."""
        requested = request.requested_model
        if requested is not None and self.config.resolve(requested) is None:
            raise NotFound(
                f"model {requested!r} is not configured", param="model", code="model_not_found"
            )
        if affinity_id is None and request.continues is not None:
            continued = self._continued(request.continues)
            if continued is not None:
                return continued
        if affinity_id is None:
            return Plan(await self.route(request), "none")
        key = pin_key(tenant, affinity_id)
        started = time.perf_counter()
        lookup = await self.store.get(key)
        self.metrics.store_time(self.store.name, time.perf_counter() - started)
        if lookup.degraded:
            self.metrics.affinity("degraded")
        pin = lookup.pin
        if pin is not None and pin.model in self.config.models:
            self.metrics.affinity("hit")
            self.metrics.decision(pin.route, pin.model, "affinity")
            decision = Decision(pin.route, (pin.model,), "affinity")
            return Plan(decision, "degraded" if lookup.degraded else "hit", key, may_reroute=self.reroute)
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
        if pinned.created:
            self.metrics.affinity("new")
            status: AffinityStatus = "degraded" if pinned.degraded else "new"
            return Plan(decision, status, key, may_follow=True, may_reroute=self.reroute)
        self.metrics.affinity("race_lost")  # another replica pinned this session first: serve its choice
        served = Decision(pinned.pin.route, (pinned.pin.model,), decision.source)
        return Plan(served, "degraded" if pinned.degraded else "hit", key, may_reroute=self.reroute)

    def _continued(self, continues: tuple[str, str | None]) -> Plan | None:
        """A Responses follow-up goes back to the model that produced what it continues (its
        context may live only there); a model gone from the config routes afresh."""
        model, route = continues
        if model not in self.config.models:
            return None
        self.metrics.affinity("hit")
        self.metrics.decision(route, model, "affinity")
        return Plan(Decision(route, (model,), "affinity"), "hit", affinity_source="previous-response")

    async def route(self, request: ClientRequest) -> Decision:
        started = time.perf_counter()
        choice = await self.router.choose(request.turns)
        self.metrics.router_time(self.router.name, time.perf_counter() - started)
        models = candidates(self.config, choice.route, request.requested_model)
        self.metrics.decision(choice.route, models[0], choice.source)
        return Decision(choice.route, models, choice.source)

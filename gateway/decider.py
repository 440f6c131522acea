"""Deciding a request's plan: the session's pin if it has one, else a fresh route, pinned
first-writer-wins so that replicas racing on a session's first turn agree. The plan says
which models to try in order and whether the pin may move; `dispatch` runs it."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal

from gateway.affinity import AffinityStore, Pin, pin_key
from gateway.affinity.base import LaneRef, tenant_tag
from gateway.affinity.lanes import LaneIndex
from gateway.apis.base import ClientRequest, Continued
from gateway.config import Config
from gateway.errors import NotFound
from gateway.metrics import Metrics
from gateway.routing import Decision, Router, candidates
from gateway.sessions import Session

AffinityStatus = Literal["new", "hit", "none", "degraded"]
# Tenants whose key tag is kept (a hash each, else on every request); past it, start over.
TENANT_TAGS = 10_000


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
    session: Session | None = None  # where the session key came from, and the lane
    # (the session's lane-less key, the lane): where the pin's lane is listed, moved with it
    listing: LaneRef | None = None

    @property
    def source(self) -> str:
        return self.session.source if self.session is not None else "none"

    def first_only(self) -> Plan:
        """The planned model alone: no fallback, and nothing to move."""
        d = self.decision
        return replace(self, decision=Decision(d.route, d.models[:1], d.source), may_follow=False,
                       may_reroute=False)


class Decider:
    def __init__(
        self, config: Config, store: AffinityStore, router: Router, metrics: Metrics
    ) -> None:
        self.config = config
        self.store = store
        self.router = router
        self.metrics = metrics
        self.reroute = config.routing.on_pinned_failure == "reroute"
        self.unknown_to_default = config.routing.unknown_model == "default"
        self.lanes = LaneIndex()
        # A follow-up no source ranked before previous-response placed (by default none: it
        # comes last) goes back to the model of what it continues.
        sources = config.routing.session_sources
        ranked = [rank for rank, s in enumerate(sources) if s.body == "previous_response_id"]
        self.follow_previous = bool(ranked)
        # the sources a continued response goes before: those ranked after it
        later = sources[ranked[0] + 1:] if ranked else ()
        self._outranked = frozenset(s.name for s in later) | {"fingerprint"}
        self._tags: dict[str, str] = {}

    async def plan(
        self, request: ClientRequest, session: Session | None, tenant: str, *, pin: bool = True
    ) -> Plan:
        """The pin if there is one; else a fresh route, pinned first-writer-wins (`pin=False`:
        only looked up, as for counting tokens)."""
        requested = request.requested_model
        if requested is not None and not self.unknown_to_default and self.config.resolve(requested) is None:
            raise NotFound(
                f"model {requested!r} is not configured", param="model", code="model_not_found"
            )
        if request.continues is not None and self.follow_previous and (
            session is None or session.source in self._outranked
        ):
            continued = self._continued(request.continues)
            if continued is not None:
                self.metrics.session_source(continued.source)
                return continued
        self.metrics.session_source(session.source if session is not None else "none")
        if session is None:
            return Plan(await self.route(request), "none")
        tag = self._tags.get(tenant)
        if tag is None:
            if len(self._tags) >= TENANT_TAGS:
                self._tags.clear()
            tag = self._tags[tenant] = tenant_tag(tenant)
        key = pin_key(tenant, session.affinity_id, session.lane, tag)
        # The session's lane-less key, where its lanes are listed: a sliding hit restarts that
        # listing, a new pin joins it, a moved one keeps it alive.
        listing = (pin_key(tenant, session.affinity_id, tag=tag) if session.lane else key, session.lane)
        self.lanes.saw(tenant, session.affinity_id, session.lane)
        started = time.perf_counter()
        lookup = await self.store.get(key, listing[0])
        self.metrics.store_time(self.store.name, time.perf_counter() - started)
        if lookup.degraded:
            self.metrics.affinity("degraded")
        found = lookup.pin
        if found is not None and self.config.resolve(found.model) is not None:
            self.metrics.affinity("hit")
            self.metrics.decision(found.route, found.model, "affinity")
            decision = Decision(found.route, (found.model,), "affinity")
            status: AffinityStatus = "degraded" if lookup.degraded else "hit"
            return Plan(decision, status, key, may_reroute=self.reroute, session=session, listing=listing)
        if found is not None and pin:  # pinned to a model that has left the config: route afresh
            await self.store.delete(key)  # (not when only counting tokens: that changes nothing)
        decision = await self.route(request)
        if not pin:
            return Plan(decision, "none", session=session)
        started = time.perf_counter()
        pinned = await self.store.pin(key, Pin(decision.model, decision.route), listing)
        self.metrics.store_time(self.store.name, time.perf_counter() - started)
        if pinned.evicted:
            self.metrics.affinity("evicted", pinned.evicted)
        if pinned.degraded and not lookup.degraded:
            self.metrics.affinity("degraded")
        if pinned.created:
            self.metrics.affinity("new")
            status = "degraded" if pinned.degraded else "new"
            return Plan(decision, status, key, may_follow=True, may_reroute=self.reroute, session=session,
                        listing=listing)
        self.metrics.affinity("race_lost")  # another replica pinned this session first: serve its choice
        served = Decision(pinned.pin.route, (pinned.pin.model,), "affinity")  # the winner's pin
        status = "degraded" if pinned.degraded else "hit"
        return Plan(served, status, key, may_reroute=self.reroute, session=session, listing=listing)

    def _continued(self, continues: Continued) -> Plan | None:
        """A Responses follow-up goes back to the model that produced what it continues (its
        context may live only there); a model gone from the config routes afresh."""
        model, route, chain = continues
        if self.config.resolve(model) is None:  # a wildcard's model is still served
            return None
        self.metrics.affinity("hit")
        self.metrics.decision(route, model, "affinity")
        # No pin: the stored response names the model. The chain's first response id names the
        # conversation, in the access log and the routing decision.
        session = Session(chain, "previous-response", "")
        return Plan(Decision(route, (model,), "affinity"), "hit", session=session)

    async def route(self, request: ClientRequest) -> Decision:
        started = time.perf_counter()
        choice = await self.router.choose(request.turns)
        self.metrics.router_time(self.router.name, time.perf_counter() - started)
        models = candidates(self.config, choice.route, request.requested_model)
        self.metrics.decision(choice.route, models[0], choice.source)
        return Decision(choice.route, models, choice.source)

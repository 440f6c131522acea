"""Every metric the gateway exposes (SPEC section 7), defined in one place.

Label children are cached per label tuple so the hot path does a dict lookup, not a
`labels()` call that builds objects on every request. Affinity ids are never labels.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

# Set by `serve --workers N` (N > 1) before workers start: values then live in files there.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Gateway-side work (Redis, routing): sub-millisecond to a second.
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Routers: the builtin one in microseconds, an llm router up to its timeout (seconds).
ROUTER_BUCKETS = (*FAST_BUCKETS, 2.5, 5.0, 10.0)
# LLM latencies: tens of milliseconds to minutes.
LLM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Requests served", ["endpoint", "model", "status"], registry=r
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds", "Whole request time, upstream included",
            ["endpoint"], buckets=LLM_BUCKETS, registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds", "Upstream call time until the last byte",
            ["provider", "model"], buckets=LLM_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds", "Time to the first streamed token",
            ["model"], buckets=LLM_BUCKETS, registry=r,
        )
        self.routing_decisions = Counter(
            "gateway_routing_decisions", "Routing decisions", ["route", "model", "source"],
            registry=r,
        )
        self.router_duration = Histogram(
            "gateway_router_duration_seconds", "Time to choose a route", ["router"],
            buckets=ROUTER_BUCKETS, registry=r,
        )
        self.affinity_events = Counter(
            "gateway_affinity_events", "Affinity store outcomes", ["event"], registry=r
        )
        self.store_duration = Histogram(
            "gateway_affinity_store_duration_seconds", "Affinity store call time", ["store"],
            buckets=FAST_BUCKETS, registry=r,
        )
        self.pins = Gauge(
            "gateway_affinity_pins", "Live pins in the store (sampled)", registry=r,
            multiprocess_mode="max",
        )
        self.tokens = Counter(
            "gateway_tokens", "Tokens reported by upstream usage", ["model", "kind"], registry=r
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Upstream failures", ["provider", "reason"], registry=r
        )
        self.inflight = Gauge(
            "gateway_inflight_requests", "Requests in progress", registry=r,
            multiprocess_mode="livesum",
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def render(self) -> bytes:
        """The exposition for a scrape: this process, or every worker's files added up."""
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return bytes(generate_latest(self.registry))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))

    def close(self) -> None:
        if os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        self._child(self.requests, endpoint, model, str(status)).inc()
        self._child(self.request_duration, endpoint).observe(seconds)

    def decision(self, route: str | None, model: str, source: str) -> None:
        self._child(self.routing_decisions, route or "", model, source).inc()

    def router_time(self, router: str, seconds: float) -> None:
        self._child(self.router_duration, router).observe(seconds)

    def affinity(self, event: str, count: int = 1) -> None:
        self._child(self.affinity_events, event).inc(count)

    def store_time(self, store: str, seconds: float) -> None:
        self._child(self.store_duration, store).observe(seconds)

    def upstream(self, provider: str, model: str, seconds: float) -> None:
        self._child(self.upstream_duration, provider, model).observe(seconds)

    def first_token(self, model: str, seconds: float) -> None:
        self._child(self.ttft, model).observe(seconds)

    def usage(self, model: str, prompt: int, completion: int) -> None:
        if prompt:
            self._child(self.tokens, model, "prompt").inc(prompt)
        if completion:
            self._child(self.tokens, model, "completion").inc(completion)

    def upstream_error(self, provider: str, reason: str) -> None:
        self._child(self.upstream_errors, provider, reason).inc()

"""Every metric the gateway exposes (SPEC section 7), defined in one place.

The hot path never calls prometheus_client: each label set has a tally of plain numbers (a
float, or bucket counts and a sum) that requests add to, and `flush()` moves the tallies into
the prometheus metrics before every scrape this process answers and every second (so that,
with several workers, the files other workers' scrapes read are at most a second behind).
That is a dict lookup and an addition per update instead of a lock and a bucket walk.
Affinity ids are never labels.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.samples import Exemplar

# Set by `serve --workers N` (N > 1) before workers start: prometheus_client itself reads it
# when metrics are created, to keep values in files there; the app passes it to `Metrics`.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Gateway-side work (Redis, routing): sub-millisecond to a second.
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Routers: the builtin one in microseconds, an llm router up to its timeout (seconds).
ROUTER_BUCKETS = (*FAST_BUCKETS, 2.5, 5.0, 10.0)
# LLM latencies: tens of milliseconds to minutes.
LLM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
FLUSH_INTERVAL_S = 1.0
# Model names a wildcard (`anthropic/*`) served that get a label of their own; beyond them a
# name is counted as its wildcard's, so clients asking for ever new names cannot grow /metrics.
MODEL_LABELS = 64
# The lifespan state key under which the app hands its Metrics to the server's connections
# (gateway/server.py), which see what never reaches the app: refused heads, slow clients.
SERVER_METRICS = "gateway.metrics"


class Tally:
    """A counter's or gauge's increments since the last flush."""

    __slots__ = ("child", "value")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.value = 0.0

    def add(self, amount: float) -> None:
        self.value += amount

    def flush(self) -> None:
        if self.value:
            amount, self.value = self.value, 0.0
            self.child.inc(amount)


class HistogramTally:
    """A histogram's observations since the last flush: a count per bucket and the sum."""

    __slots__ = ("bounds", "child", "counts", "exemplar", "sum")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = child._upper_bounds  # ends with +Inf: every value has a bucket
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.exemplar: tuple[str, float] | None = None  # (trace id, value): only with tracing on

    def add(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount, as observe()
        self.sum += amount

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        # prometheus_client has no public "add n observations"; its bucket values are the ones
        # observe() increments. The version is capped in pyproject.toml and
        # tests/unit/test_metrics.py checks these attributes and the exposition they give.
        for index, count in enumerate(counts):
            if count:
                self.child._buckets[index].inc(count)
                counts[index] = 0
        amount, self.sum = self.sum, 0.0
        self.child._sum.inc(amount)
        if self.exemplar is not None:  # the last traced observation, as observe(exemplar=) keeps it
            trace_id, value = self.exemplar
            self.exemplar = None
            bucket = self.child._buckets[bisect_left(self.bounds, value)]
            bucket.set_exemplar(Exemplar({"trace_id": trace_id}, value, time.time()))


class Metrics:
    def __init__(
        self, multiprocess_dir: str | None = None, registry: CollectorRegistry | None = None,
        models: Iterable[str] = (),
    ) -> None:
        """`models`: the configured model names, always labelled as they are."""
        self.multiprocess_dir = multiprocess_dir  # each worker's values live in files there
        self._configured = frozenset(models)
        self._served: set[str] = set()  # other names served (through a wildcard), up to MODEL_LABELS
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
        self.store_up = Gauge(
            "gateway_affinity_store_up",
            "1 while the affinity store answers, 0 while it is degraded (serving fail-open)",
            ["store"], registry=r, multiprocess_mode="livemin",
        )
        self.tokens = Counter(
            "gateway_tokens", "Tokens reported by upstream usage", ["model", "kind"], registry=r
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Upstream failures", ["provider", "reason"], registry=r
        )
        self.affinity_sources = Counter(
            "gateway_affinity_sources", "Where requests' session keys came from (none: no session)",
            ["source"], registry=r,
        )
        self.translation_drops = Counter(
            "gateway_translation_drops", "Request parts a cross-API translation could not map",
            ["api", "what"], registry=r,
        )
        self.inflight = Gauge(
            "gateway_inflight_requests", "Requests in progress", registry=r,
            multiprocess_mode="livesum",
        )
        self.spans_dropped = Counter(
            "gateway_trace_spans_dropped", "Trace spans lost: the export queue was full, or the "
            "export failed", ["reason"], registry=r,
        )  # incremented from the span processor's thread, directly (thread-safe, and rare)
        self.slow_clients = Counter(
            "gateway_slow_clients_dropped", "Connections dropped for sending a request too slowly",
            ["phase"], registry=r,
        )
        self.inbound_refused = Counter(
            "gateway_inbound_refused", "Requests refused while being read (head too large, too "
            "many headers, too many connections)", ["reason"], registry=r,
        )
        self._inflight = Tally(self.inflight)  # no labels: held directly, flushed with the rest
        self._tallies: dict[tuple[Any, ...], Tally | HistogramTally] = {(id(self.inflight),): self._inflight}

    def render(self) -> bytes:
        """The exposition for a scrape: this process, or every worker's files added up."""
        return self._exposition(generate_latest)

    def render_openmetrics(self) -> bytes:
        """The OpenMetrics exposition, which alone carries exemplars (the trace ids behind the
        latency histograms, when tracing is on). Exemplars live in this process only: with
        several workers the files they share have none (a prometheus_client limit)."""
        return self._exposition(openmetrics.generate_latest)

    def _exposition(self, generate: Any) -> bytes:
        self.flush()
        if not self.multiprocess_dir:
            return bytes(generate(self.registry))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return bytes(generate(registry))

    def exemplar(self, histogram: Histogram, labels: tuple[str, ...], trace_id: str, value: float) -> None:
        """Keep a traced request's trace id for the bucket its value falls in; the next flush
        attaches it (the last one per label set wins, as with observe(exemplar=))."""
        tally = self._tally(histogram, *labels)
        if isinstance(tally, HistogramTally):
            tally.exemplar = (trace_id, value)

    def flush(self) -> None:
        for tally in self._tallies.values():
            tally.flush()

    def close(self) -> None:
        self.flush()
        if self.multiprocess_dir:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def _tally(self, metric: Any, *labels: str) -> Tally | HistogramTally:
        key = (id(metric), *labels)
        tally = self._tallies.get(key)
        if tally is None:
            child = metric.labels(*labels)
            tally = HistogramTally(child) if isinstance(metric, Histogram) else Tally(child)
            self._tallies[key] = tally
        return tally

    def started(self) -> None:
        self._inflight.value += 1

    def finished(self) -> None:
        self._inflight.value -= 1

    def model_label(self, name: str) -> str:
        """The model label for `name`: itself, unless MODEL_LABELS other names came first."""
        if name in self._configured or name in self._served or not name:
            return name
        if len(self._served) < MODEL_LABELS:
            self._served.add(name)
            return name
        return f"{name.partition('/')[0]}/*"

    def request(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        self._tally(self.requests, endpoint, self.model_label(model), str(status)).add(1)
        self._tally(self.request_duration, endpoint).add(seconds)

    def decision(self, route: str | None, model: str, source: str) -> None:
        self._tally(self.routing_decisions, route or "", self.model_label(model), source).add(1)

    def session_source(self, source: str) -> None:
        self._tally(self.affinity_sources, source).add(1)

    def translation_drop(self, api: str, what: str) -> None:
        self._tally(self.translation_drops, api, what).add(1)

    def router_time(self, router: str, seconds: float) -> None:
        self._tally(self.router_duration, router).add(seconds)

    def affinity(self, event: str, count: int = 1) -> None:
        self._tally(self.affinity_events, event).add(count)

    def store_state(self, store: str, up: bool) -> None:
        """Set on each change of the store's state (rare), so straight to the gauge."""
        self.store_up.labels(store).set(1 if up else 0)

    def store_time(self, store: str, seconds: float) -> None:
        self._tally(self.store_duration, store).add(seconds)

    def upstream(self, provider: str, model: str, seconds: float) -> None:
        self._tally(self.upstream_duration, provider, self.model_label(model)).add(seconds)

    def first_token(self, model: str, seconds: float) -> None:
        self._tally(self.ttft, self.model_label(model)).add(seconds)

    def usage(self, model: str, prompt: int, completion: int, cached_prompt: int = 0) -> None:
        """`cached_prompt`: the part of `prompt` the provider read from its prompt cache."""
        model = self.model_label(model)
        if prompt > 0:  # counters only grow: prometheus_client refuses a negative increment
            self._tally(self.tokens, model, "prompt").add(prompt)
        if completion > 0:
            self._tally(self.tokens, model, "completion").add(completion)
        if cached_prompt > 0:
            self._tally(self.tokens, model, "cached_prompt").add(cached_prompt)

    def upstream_error(self, provider: str, reason: str) -> None:
        self._tally(self.upstream_errors, provider, reason).add(1)

    def slow_client(self, phase: str) -> None:
        self._tally(self.slow_clients, phase).add(1)

    def refused(self, reason: str) -> None:
        self._tally(self.inbound_refused, reason).add(1)

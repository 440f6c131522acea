"""The Grafana dashboard and the Prometheus alert rules name only metrics the gateway exposes.

The metric list is SPEC section 7, kept here on purpose rather than imported from
gateway.metrics: a rename in the code must fail this test until the dashboards follow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "affinity-gateway.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"

# name -> (type, labels), as in SPEC section 7.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "gateway_requests_total": ("counter", frozenset({"endpoint", "model", "status"})),
    "gateway_request_duration_seconds": ("histogram", frozenset({"endpoint"})),
    "gateway_upstream_duration_seconds": ("histogram", frozenset({"provider", "model"})),
    "gateway_time_to_first_token_seconds": ("histogram", frozenset({"model"})),
    "gateway_routing_decisions_total": ("counter", frozenset({"route", "model", "source"})),
    "gateway_router_duration_seconds": ("histogram", frozenset({"router"})),
    "gateway_affinity_events_total": ("counter", frozenset({"event"})),
    "gateway_affinity_store_duration_seconds": ("histogram", frozenset({"store"})),
    "gateway_affinity_pins": ("gauge", frozenset()),
    "gateway_affinity_store_up": ("gauge", frozenset({"store"})),  # SPEC section 4
    "gateway_tokens_total": ("counter", frozenset({"model", "kind"})),
    "gateway_upstream_errors_total": ("counter", frozenset({"provider", "reason"})),
    "gateway_inflight_requests": ("gauge", frozenset()),
    "gateway_affinity_sources_total": ("counter", frozenset({"source"})),
    "gateway_translation_drops_total": ("counter", frozenset({"api", "what"})),
    # SPEC section 11 (tracing): spans lost on the way to the collector.
    "gateway_trace_spans_dropped_total": ("counter", frozenset({"reason"})),
}
# Label values that are a closed set in the SPEC.
LABEL_VALUES = {
    "event": {"hit", "new", "race_lost", "evicted", "error", "degraded"},
    "kind": {"prompt", "completion", "cached_prompt"},
    "source": {"router", "affinity", "fallback"},
}
# Labels Prometheus attaches to every scraped series (Kubernetes service discovery).
TARGET_LABELS = frozenset({"namespace", "pod", "job", "instance", "service", "container"})


def exposed_series() -> dict[str, frozenset[str]]:
    """Every series name on /metrics -> the labels it carries."""
    series: dict[str, frozenset[str]] = {}
    for name, (kind, labels) in METRICS.items():
        if kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = labels
            series[f"{name}_count"] = labels
        else:
            series[name] = labels
    return series


SERIES = exposed_series()
METRIC_TOKEN = re.compile(r"\bgateway_[a-z_]+")
SELECTOR = re.compile(r"\b(gateway_[a-z_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def check_expr(expr: str) -> list[str]:
    """Problems with one PromQL expression: unknown series, labels or label values."""
    problems = []
    names = METRIC_TOKEN.findall(expr)
    if not names:
        problems.append("names no gateway metric")
    unknown = [name for name in names if name not in SERIES]
    problems += [f"unknown series {name}" for name in unknown]
    known = [name for name in names if name in SERIES]
    for name, matchers in SELECTOR.findall(expr):
        for label, _op, value in MATCHER.findall(matchers):
            if name in SERIES and label not in SERIES[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
            if label in LABEL_VALUES:
                bad = set(value.split("|")) - LABEL_VALUES[label]
                problems += [f"{label} has no value {v!r}" for v in sorted(bad)]
    available = TARGET_LABELS.union(*(SERIES[name] for name in known))
    for group in GROUPING.findall(expr):
        labels = {label.strip() for label in group.split(",") if label.strip()}
        problems += [f"grouping by missing label {label}" for label in labels - available]
    problems += balance_problems(expr)
    return problems


def balance_problems(expr: str) -> list[str]:
    """Unbalanced brackets outside string literals: the usual way a PromQL edit breaks."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    in_string = False
    for char in expr:
        if char == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return [f"unbalanced {char!r}"]
    return [f"unclosed {stack[-1]!r}"] if stack or in_string else []


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["definition"])
    return exprs


def affinity_events() -> set[str]:
    """The `event` label values the gateway counts (`metrics.affinity("...")` in its source)."""
    source = "".join(path.read_text() for path in (DEPLOY.parent / "gateway").rglob("*.py"))
    return set(re.findall(r'\.affinity\("([a-z_]+)"', source))


def test_dashboard_and_alerts_ask_only_for_affinity_events_the_gateway_counts(
    dashboard: dict[str, Any], rules: list[dict[str, Any]]
) -> None:
    """A misspelt or invented label value is a panel that stays empty without a word."""
    known = affinity_events()
    assert {"hit", "new", "degraded"} <= known
    exprs = [*dashboard_exprs(dashboard), *(rule["expr"] for rule in rules)]
    asked = {value for expr in exprs for match in re.findall(r'event=~?"([^"]+)"', expr)
             for value in match.split("|")}
    assert asked and asked <= known, asked - known


def test_expression_checker_catches_mistakes() -> None:
    assert check_expr('sum(rate(gateway_requests_total{status=~"5.."}[5m]))') == []
    assert check_expr("rate(gateway_request_total[5m])") == ["unknown series gateway_request_total"]
    assert check_expr("rate(gateway_request_duration_seconds[5m])") == [
        "unknown series gateway_request_duration_seconds"
    ]
    assert check_expr('gateway_affinity_events_total{event="miss"}') == ["event has no value 'miss'"]
    assert check_expr('gateway_tokens_total{route="x"}') == ["gateway_tokens_total has no label route"]
    assert check_expr("sum by (route) (gateway_tokens_total)") == ["grouping by missing label route"]
    assert check_expr("sum(rate(gateway_tokens_total[5m])") == ["unclosed '('"]
    assert check_expr("up") == ["names no gateway metric"]


def test_dashboard_is_a_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "affinity-gateway"
    assert dashboard["title"]
    all_panels = list(panels(dashboard["panels"]))
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in all_panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} overflows the 24-column grid"
        for target in panel.get("targets", []):
            # Every query uses the data source picker, so the dashboard imports anywhere.
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert "$namespace" in target["expr"], f"{panel['title']} ignores the namespace filter"
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert names == ["datasource", "namespace"]


def test_every_dashboard_query_names_exposed_metrics(dashboard: dict[str, Any]) -> None:
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) > 20
    problems = {expr: check_expr(expr) for expr in exprs}
    assert {expr: p for expr, p in problems.items() if p} == {}


def test_latency_panels_show_the_exemplars_that_link_to_traces(dashboard: dict[str, Any]) -> None:
    with_exemplars = {
        panel["title"]: [t["expr"] for t in panel["targets"] if t.get("exemplar")]
        for panel in panels(dashboard["panels"]) if any(t.get("exemplar") for t in panel.get("targets", []))
    }
    # The two histograms the gateway attaches trace ids to (gateway/tracing/otel.py).
    assert sorted(with_exemplars) == ["Request duration by endpoint", "Time to first token by model"]
    assert all(len(exprs) == 1 for exprs in with_exemplars.values())


def test_dashboard_answers_the_operator_questions(dashboard: dict[str, Any]) -> None:
    exprs = "\n".join(dashboard_exprs(dashboard))
    quantile = "histogram_quantile({}, sum by (le, {}) (rate({}_bucket"
    wanted = {
        "requests by model": "sum by (model) (rate(gateway_requests_total",
        "errors by model": 'sum by (model, status) (rate(gateway_requests_total{namespace=~"$namespace", '
        'status=~"[45].."}',
        "latency percentiles": quantile.format(0.99, "endpoint", "gateway_request_duration_seconds"),
        "ttft percentiles": quantile.format(0.95, "model", "gateway_time_to_first_token_seconds"),
        "decisions by route and source": "sum by (route, source) (rate(gateway_routing_decisions_total",
        "pin hit ratio": 'gateway_affinity_events_total{namespace=~"$namespace", event="hit"}',
        "redis degraded": 'event="degraded"',
        "tokens by model": "sum by (model, kind) (rate(gateway_tokens_total",
        "in-flight": "gateway_inflight_requests",
        "pins": "gateway_affinity_pins",
        "prompt-cache hit ratio by model": 'sum by (model) (rate(gateway_tokens_total{'
        'namespace=~"$namespace", kind="cached_prompt"}',
        "session sources": "sum by (source) (rate(gateway_affinity_sources_total",
    }
    assert {question for question, fragment in wanted.items() if fragment not in exprs} == set()


def test_alert_rules_are_well_formed(rules: list[dict[str, Any]]) -> None:
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert re.fullmatch(r"AffinityGateway[A-Za-z0-9]+", rule["alert"])
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        for text in rule["annotations"].values():
            # Alertmanager templates: every {{ opens and closes.
            assert text.count("{{") == text.count("}}"), rule["alert"]


def test_alert_rules_name_exposed_metrics(rules: list[dict[str, Any]]) -> None:
    assert {rule["alert"]: check_expr(rule["expr"]) for rule in rules if check_expr(rule["expr"])} == {}


def test_alert_rules_cover_the_issue(rules: list[dict[str, Any]]) -> None:
    by_name = {rule["alert"]: " ".join(rule["expr"].split()) for rule in rules}
    assert 'gateway_requests_total{status=~"5.."}' in by_name["AffinityGatewayHighErrorRate"]
    assert 'gateway_affinity_events_total{event="degraded"}' in by_name["AffinityGatewayRedisDegraded"]
    store_down = by_name["AffinityGatewayAffinityStoreDown"]
    assert store_down == "min by (namespace, pod) (gateway_affinity_store_up) == 0"
    collapse = by_name["AffinityGatewayPinHitRatioCollapse"]
    assert 'event="hit"' in collapse and "offset 1h" in collapse
    assert by_name["AffinityGatewayHighLatencyP99"].startswith(
        "histogram_quantile(0.99, sum by (le, endpoint) (rate(gateway_request_duration_seconds_bucket"
    )

"""What the run saw, per harness session and lane, from the recorded exchanges.

A session is what the harness says it is (Claude Code's `x-claude-code-session-id`, Codex's
`session-id`, else `metadata.user_id`'s session, else `prompt_cache_key`). A lane is the
sub-agent (`x-claude-code-agent-id`) when there is one, else the requested model (SPEC 4a).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from interop.capture import Exchange

_ABSENT = "-"


def session_of(exchange: Exchange) -> str:
    headers, body = exchange.headers, exchange.body if isinstance(exchange.body, dict) else {}
    for name in ("x-claude-code-session-id", "session-id", "session_id", "x-session-id"):
        if headers.get(name):
            return headers[name]
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        try:
            return str(json.loads(metadata["user_id"])["session_id"])
        except (ValueError, KeyError, TypeError):
            return str(metadata["user_id"])
    return str(body.get("prompt_cache_key") or _ABSENT)


def lane_of(exchange: Exchange) -> str:
    agent = exchange.headers.get("x-claude-code-agent-id")
    body = exchange.body if isinstance(exchange.body, dict) else {}
    model = body.get("model") or _ABSENT
    return f"agent {agent} ({model})" if agent else f"model {model}"


@dataclass
class Lane:
    requests: int = 0
    failures: Counter[int] = field(default_factory=Counter)
    models: list[str] = field(default_factory=list)  # served, in order
    statuses: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    endpoints: Counter[str] = field(default_factory=Counter)
    order: list[str] = field(default_factory=list)  # affinity statuses, in arrival order
    prompt_tokens: int = 0
    cached_tokens: int = 0

    def add(self, exchange: Exchange) -> None:
        self.requests += 1
        self.endpoints[f"{exchange.method} {exchange.path}"] += 1
        if not 200 <= exchange.status < 300:
            self.failures[exchange.status] += 1
        headers = exchange.response_headers
        if headers.get("x-gateway-model"):
            self.models.append(headers["x-gateway-model"])
        self.statuses[headers.get("x-model-affinity-status", _ABSENT)] += 1
        self.order.append(headers.get("x-model-affinity-status", _ABSENT))
        self.sources[headers.get("x-model-affinity-source", _ABSENT)] += 1
        if exchange.usage is not None:
            self.prompt_tokens += exchange.usage.prompt
            self.cached_tokens += exchange.usage.cached

    @property
    def switches(self) -> int:
        return sum(1 for a, b in zip(self.models, self.models[1:], strict=False) if a != b)

    def cache_ratio(self) -> str:
        if not self.cached_tokens:
            return "n/a (no cached tokens reported)" if self.prompt_tokens else "n/a (no usage)"
        return f"{self.cached_tokens / self.prompt_tokens:.0%} of {self.prompt_tokens} prompt tokens"


def group(exchanges: Iterable[Exchange]) -> dict[tuple[str, str], dict[str, Lane]]:
    """(harness, session) -> lane -> tallies, in order of first appearance."""
    sessions: dict[tuple[str, str], dict[str, Lane]] = defaultdict(dict)
    for exchange in exchanges:
        lanes = sessions[(exchange.harness, session_of(exchange))]
        lanes.setdefault(lane_of(exchange), Lane()).add(exchange)
    return sessions


def render(exchanges: list[Exchange], names: dict[str, str], gateway: bool = True) -> str:
    """`names`: session id -> the scripted session's name, where the CLI said which it was;
    `gateway`: the exchanges went through it (else models and affinity are not shown)."""
    lines: list[str] = []
    for (harness, session), lanes in group(exchanges).items():
        total = sum(lane.requests for lane in lanes.values())
        name = names.get(session, harness)
        lines.append(f"\n{name}  session {_short(session)}: {total} requests, {len(lanes)} lane(s)")
        for name, lane in lanes.items():
            lines.append(f"  lane {name}")
            lines.extend(f"    {line}" for line in _lane_lines(lane) if gateway or _plain(line))
    return "\n".join(lines)


def _lane_lines(lane: Lane) -> list[str]:
    failures = ", ".join(f"{status} x{n}" for status, n in sorted(lane.failures.items()))
    served = Counter(lane.models)
    return [
        f"requests {lane.requests}: {_counts(lane.endpoints)}",
        f"non-2xx  {sum(lane.failures.values())}" + (f" ({failures})" if failures else ""),
        f"models   {len(served)} distinct: {_counts(served) or _ABSENT}; {lane.switches} switch(es)",
        f"affinity status {_counts(lane.statuses)}; source {_counts(lane.sources)}",
        f"cache    {lane.cache_ratio()}",
    ]


def _plain(line: str) -> bool:
    return not line.startswith(("models", "affinity"))


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} x{n}" for name, n in counter.most_common())


def _short(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


def failures(exchanges: list[Exchange], names: dict[str, str]) -> str:
    """Every distinct non-2xx answer per session name: status, request, error message, how often."""
    seen: Counter[tuple[str, int, str, str]] = Counter()
    for exchange in exchanges:
        if not 200 <= exchange.status < 300:
            harness = names.get(session_of(exchange), exchange.harness)
            body = exchange.body if isinstance(exchange.body, dict) else {}
            model = f" model={body['model']}" if body.get("model") else ""
            request = f"{exchange.method} {exchange.path}{model}"
            seen[(harness, exchange.status, request, _message(exchange))] += 1
    return "\n".join(
        f"  {harness}: {status} x{n} for {request}: {message}"
        for (harness, status, request, message), n in seen.items()
    )


def _message(exchange: Exchange) -> str:
    if exchange.error:
        return exchange.error
    try:
        error = json.loads(exchange.answer or "")["error"]
        return str(error.get("message", error)) if isinstance(error, dict) else str(error)
    except (ValueError, KeyError, TypeError):
        return (exchange.answer or "(empty body)")[:200]


def check(exchanges: list[Exchange], names: dict[str, str]) -> list[str]:
    """The affinity acceptance, per session and lane through the gateway: every answer a 2xx,
    one model served, a session source found, `new` on the lane's first request and `hit` on
    every later one. A first request answered `hit` means the lane found a pin it never made:
    another session's (two sessions sharing pins). Returns what failed, one line each."""
    problems: list[str] = []
    for (harness, session), lanes in group(exchanges).items():
        who = f"{names.get(session, harness)} session {_short(session)}"
        if session == _ABSENT:
            problems.append(f"{who}: {sum(lane.requests for lane in lanes.values())} request(s) "
                            "without a session id")
            continue
        for name, lane in lanes.items():
            where = f"{who} lane {name}"
            if lane.failures:
                problems.append(f"{where}: {sum(lane.failures.values())} non-2xx answer(s)")
            served = Counter(lane.models)
            if len(served) > 1:
                problems.append(f"{where}: {len(served)} models served ({_counts(served)})")
            if "none" in lane.sources or _ABSENT in lane.sources:
                problems.append(f"{where}: no session source on some requests ({_counts(lane.sources)})")
            if lane.order[:1] not in (["new"], []) or any(s != "hit" for s in lane.order[1:]):
                problems.append(f"{where}: statuses in order {' '.join(lane.order)} (want new, then hit)")
    return problems

"""Locust users for the gateway: agent sessions pinned with X-Model-Affinity, and plain clients.

`AgentSession` runs multi-turn tool-calling sessions whose turns alternate intent (code
generation, then analysis, ...), so without affinity the router would switch models between
turns. Each request goes to one of several replicas (`--host` plus the comma-separated
`LOADTEST_HOSTS`); a request served by any model other than the session's first is a failure
and an affinity violation. `RoutedClient` sends no header: each turn is routed afresh.

Custom statistics (printed at the end, written to `<csv prefix>_affinity.csv` and to the JSON
file named by `LOADTEST_SUMMARY`): affinity violations, pins lost, and counts of each
`x-model-affinity-status`. With violations, locust exits non-zero.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:12000 \\
        LOADTEST_HOSTS=http://127.0.0.1:12001,http://127.0.0.1:12002
"""

from __future__ import annotations

import csv
import itertools
import os
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

CODE = "Write a Python function that parses a CSV file and generates boilerplate code for it"
REASON = "Explain step by step with detailed multi-step analysis why the plan failed"
PATH = "/v1/chat/completions"
MAX_STEPS = 6  # requests per turn: the simulator's tool plan needs len(enum) + 1


@dataclass
class AffinityStats:
    """Counts kept beside locust's request stats (merged from workers when distributed)."""

    sessions: int = 0
    violations: int = 0
    pins_lost: int = 0  # a later turn answered `new`: the pin expired or was evicted
    statuses: Counter[str] = field(default_factory=Counter)
    unpinned_models: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions, "violations": self.violations, "pins_lost": self.pins_lost,
            "statuses": dict(self.statuses), "unpinned_models": dict(self.unpinned_models),
        }

    def merge(self, data: dict[str, Any]) -> None:
        self.sessions += data["sessions"]
        self.violations += data["violations"]
        self.pins_lost += data["pins_lost"]
        self.statuses.update(data["statuses"])
        self.unpinned_models.update(data["unpinned_models"])

    def reset(self) -> None:
        self.sessions = self.violations = self.pins_lost = 0
        self.statuses.clear()
        self.unpinned_models.clear()


def affinity_stats(environment: Environment) -> AffinityStats:
    stats: AffinityStats = environment.affinity_stats  # type: ignore[attr-defined]
    return stats


def replica_urls(host: str | None) -> list[str]:
    urls = [host or "", *os.environ.get("LOADTEST_HOSTS", "").split(",")]
    return list(dict.fromkeys(u.strip().rstrip("/") for u in urls if u.strip()))


def tool_for(turn: int) -> dict[str, Any]:
    """A tool whose enum values are new each turn, so the simulated agent plans fresh calls."""
    name = "run_tests" if turn % 2 == 0 else "query_logs"
    return {"type": "function", "function": {
        "name": name,
        "description": f"{name.replace('_', ' ')} for one target",
        "parameters": {"type": "object", "required": ["target"], "properties": {
            "target": {"type": "string", "enum": [f"t{turn}-a", f"t{turn}-b"]},
        }},
    }}


def streamed_message(text: str) -> dict[str, Any]:
    """The assistant message assembled from an OpenAI SSE body (content and tool calls)."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        for choice in orjson.loads(line[5:]).get("choices") or ():
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            for part in delta.get("tool_calls") or ():
                call = calls.setdefault(part["index"], {
                    "id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                call["id"] = part.get("id") or call["id"]
                function = part.get("function") or {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message


class AgentSession(FastHttpUser):
    """One agent session per task run: several turns, each a tool loop, all on one pin."""

    weight = 3
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.replicas = replica_urls(self.host)
        self.rng = random.Random()
        self.turns = int(os.environ.get("LOADTEST_TURNS", "4"))
        self.stream_share = float(os.environ.get("LOADTEST_STREAM_SHARE", "0.25"))

    @task
    def session(self) -> None:
        stats = affinity_stats(self.environment)
        stats.sessions += 1
        session_id = f"loadtest-{uuid.uuid4().hex}"
        stream = self.rng.random() < self.stream_share
        # Each turn opens on the next replica, its tool calls land anywhere: with pins that are
        # not shared, a replica that first sees the session mid-way routes it on its own.
        rotation = self.rng.sample(self.replicas, len(self.replicas))
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a coding agent. Use the tools."}]
        first: str | None = None
        offset = self.rng.randrange(2)
        for turn in range(self.turns):
            text = CODE if (turn + offset) % 2 == 0 else REASON
            messages.append({"role": "user", "content": text})
            body = {"model": "auto", "messages": messages, "tools": [tool_for(turn)],
                    "stream": stream}
            for step in range(MAX_STEPS):
                replica = rotation[turn % len(rotation)] if step == 0 else self.rng.choice(rotation)
                served = self.post(replica, session_id, body, first)
                if served is None:
                    return  # the request failed (and was recorded): end this session
                model, message = served
                first = first or model
                messages.append(message)
                if not message.get("tool_calls"):
                    break
                for call in message["tool_calls"]:
                    target = orjson.loads(call["function"]["arguments"]).get("target")
                    messages.append({"role": "tool", "tool_call_id": call["id"],
                                     "content": f"{call['function']['name']} {target}: 3 passed"})

    def post(
        self, replica: str, session_id: str, body: dict[str, Any], first: str | None
    ) -> tuple[str, dict[str, Any]] | None:
        stats = affinity_stats(self.environment)
        name = f"{PATH} [affinity{', stream' if body['stream'] else ''}]"
        with self.client.post(
            replica + PATH, data=orjson.dumps(body), name=name, catch_response=True,
            headers={"content-type": "application/json", "x-model-affinity": session_id},
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {(response.text or '')[:200]}")
                return None
            model = response.headers.get("x-gateway-model") or ""
            status = response.headers.get("x-model-affinity-status") or "missing"
            stats.statuses[status] += 1
            text = response.text or ""
            message = (streamed_message(text) if body["stream"]
                       else orjson.loads(text)["choices"][0]["message"])
            if first is not None and model != first:
                stats.violations += 1
                response.failure(f"affinity violation: pinned to {first}, served by {model}")
            elif first is not None and status == "new":
                stats.pins_lost += 1
                response.failure("pin lost: a later turn of the session was pinned anew")
            return model, message


class RoutedClient(FastHttpUser):
    """No affinity header: every request is routed on its own latest turn."""

    weight = 1
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.replicas = replica_urls(self.host)
        self.count = itertools.count()

    @task
    def turn(self) -> None:
        index = next(self.count)
        text = CODE if index % 2 == 0 else REASON
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        replica = self.replicas[index % len(self.replicas)]
        with self.client.post(
            replica + PATH, data=orjson.dumps(body), name=f"{PATH} [no affinity]",
            headers={"content-type": "application/json"}, catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {(response.text or '')[:200]}")
                return
            stats = affinity_stats(self.environment)
            status = response.headers.get("x-model-affinity-status") or "missing"
            stats.statuses[status] += 1
            stats.unpinned_models[response.headers.get("x-gateway-model") or ""] += 1
            if status != "none":
                response.failure(f"x-model-affinity-status {status!r} without the header")


@events.init.add_listener
def on_init(environment: Environment, **kwargs: Any) -> None:
    stats = AffinityStats()
    environment.affinity_stats = stats  # type: ignore[attr-defined]
    if isinstance(environment.runner, WorkerRunner):
        def report(client_id: str, data: dict[str, Any], **kwargs: Any) -> None:
            data["affinity"] = stats.as_dict()
            stats.reset()  # each report carries only what happened since the last one

        environment.events.report_to_master.add_listener(report)
    elif isinstance(environment.runner, MasterRunner):
        def merge(client_id: str, data: dict[str, Any], **kwargs: Any) -> None:
            if "affinity" in data:
                stats.merge(data["affinity"])

        environment.events.worker_report.add_listener(merge)


@events.quitting.add_listener
def on_quitting(environment: Environment, **kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return  # the master reports the merged counts
    stats = affinity_stats(environment)
    statuses = ", ".join(f"{k}={v}" for k, v in sorted(stats.statuses.items())) or "none"
    models = ", ".join(f"{k}={v}" for k, v in sorted(stats.unpinned_models.items())) or "none"
    print(f"sessions: {stats.sessions}; pin statuses: {statuses}; pins lost: {stats.pins_lost}")
    print(f"models without affinity: {models}")
    print(f"affinity violations: {stats.violations}")
    summary = os.environ.get("LOADTEST_SUMMARY")
    if summary:
        totals = environment.stats.total
        data = {**stats.as_dict(), "requests": totals.num_requests, "failures": totals.num_failures}
        Path(summary).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        with open(f"{prefix}_affinity.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["stat", "value"])
            writer.writerows([("sessions", stats.sessions), ("violations", stats.violations),
                              ("pins_lost", stats.pins_lost)])
            writer.writerows((f"status_{k}", v) for k, v in sorted(stats.statuses.items()))
    if stats.violations:
        environment.process_exit_code = 1

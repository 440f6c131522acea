"""The demo's database-selection agent: its tools, their simulated results, and its tool loop.

The loop is what any agent does: send the conversation and the tools, run the tool calls the
model asks for, append their results, repeat until the model answers in text. Each turn is a
separate request, sent to the next gateway replica in turn, so the gateway decides every turn's
model on its own - unless the session carries `X-Model-Affinity`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.usage import usage_of

JsonObject = dict[str, Any]

SYSTEM_PROMPT = (
    "You are a database selection analyst. Use the tools to gather benchmark data, case "
    "studies and feature support, then recommend PostgreSQL or MongoDB for a high-traffic "
    "e-commerce backend. Be concise."
)
USER_QUERY = (
    "Should we use PostgreSQL or MongoDB for our e-commerce platform? We need strong "
    "consistency for orders but flexible schemas for products. Use the tools to research "
    "both options, then give a recommendation."
)
DATABASES = ["postgresql", "mongodb"]
WORKLOADS = ["read_heavy", "write_heavy", "mixed"]
FEATURES = ["acid_transactions", "flexible_schema", "horizontal_sharding"]


def _tool(name: str, description: str, properties: JsonObject) -> JsonObject:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object", "properties": properties, "required": list(properties),
            },
        },
    }


# `database` comes first in each tool: the simulator plans one call per value of the first enum.
TOOLS: list[JsonObject] = [
    _tool(
        "get_db_benchmarks", "Fetch performance benchmarks for a database under a given workload.",
        {"database": {"type": "string", "enum": DATABASES},
         "workload": {"type": "string", "enum": WORKLOADS}},
    ),
    _tool(
        "get_case_studies", "Retrieve e-commerce case studies for a database.",
        {"database": {"type": "string", "enum": DATABASES}},
    ),
    _tool(
        "check_feature_support", "Check whether a database supports a feature.",
        {"database": {"type": "string", "enum": DATABASES},
         "feature": {"type": "string", "enum": FEATURES}},
    ),
]

# Simulated results, written the way a data tool reports: measurements, not instructions.
_BENCHMARKS = {
    ("postgresql", "read_heavy"): "48,000 reads/s, p99 latency 4 ms; read replicas add "
    "throughput almost linearly.",
    ("mongodb", "read_heavy"): "55,000 reads/s, p99 latency 3 ms; reads from secondaries are "
    "eventually consistent.",
    ("postgresql", "write_heavy"): "21,000 writes/s, p99 latency 9 ms; one primary takes all "
    "writes unless sharded with Citus.",
    ("mongodb", "write_heavy"): "38,000 writes/s, p99 latency 6 ms with majority write concern; "
    "shards split writes across nodes.",
    ("postgresql", "mixed"): "30,000 operations/s, p99 latency 6 ms; MVCC keeps reads from "
    "blocking writes.",
    ("mongodb", "mixed"): "41,000 operations/s, p99 latency 5 ms; multi-document transactions "
    "cut throughput by about a third.",
}
_CASE_STUDIES = {
    "postgresql": "a fashion retailer runs 2 TB of orders on one primary with three read "
    "replicas; a marketplace shards its order tables with Citus at 30,000 writes/s.",
    "mongodb": "an electronics retailer keeps 4 million products with per-category attributes "
    "in one collection; a grocery app stores shopping carts at 60,000 writes/s.",
}
_FEATURES = {
    ("postgresql", "acid_transactions"): "supported: serializable isolation across tables.",
    ("mongodb", "acid_transactions"): "supported since 4.0 across documents, with a 60 s "
    "limit and lower throughput.",
    ("postgresql", "flexible_schema"): "partly: JSONB columns hold schemaless attributes next "
    "to typed columns.",
    ("mongodb", "flexible_schema"): "supported: documents in one collection may differ in shape.",
    ("postgresql", "horizontal_sharding"): "via the Citus extension.",
    ("mongodb", "horizontal_sharding"): "supported natively, with automatic balancing.",
}
_NAMES = {"postgresql": "PostgreSQL", "mongodb": "MongoDB"}


def tool_result(name: str, arguments: JsonObject) -> str:
    """The simulated result of one tool call (an error text for arguments it does not know)."""
    database = str(arguments.get("database", "")).lower()
    label = _NAMES.get(database, database or "unknown database")
    if name == "get_db_benchmarks":
        workload = str(arguments.get("workload", "mixed")).lower()
        found = _BENCHMARKS.get((database, workload))
        heading = f"{label} benchmark, {workload.replace('_', '-')} workload"
    elif name == "get_case_studies":
        found = _CASE_STUDIES.get(database)
        heading = f"{label} case studies"
    elif name == "check_feature_support":
        feature = str(arguments.get("feature", "")).lower().replace(" ", "_")
        found = _FEATURES.get((database, feature))
        heading = f"{label} {feature.replace('_', ' ')}"
    else:
        return f"error: unknown tool {name!r}"
    return f"{heading}: {found}" if found else f"error: no data for {heading}"


class AgentError(RuntimeError):
    """A turn failed: the gateway answered with an error, or with something unreadable."""


@dataclass(frozen=True, slots=True)
class Step:
    """One turn of the loop, as the gateway reported it."""

    number: int
    replica: int  # 1-based index of the replica that served the turn
    model: str  # x-gateway-model: the provider/id that answered
    route: str  # x-gateway-route (empty: no route matched)
    affinity: str  # x-model-affinity-status: new | hit | none | degraded
    tools: tuple[str, ...]  # tool calls the model made; empty for the final answer
    answer: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0  # the part of the prompt the model read from its prompt cache


@dataclass(frozen=True, slots=True)
class Run:
    steps: tuple[Step, ...]
    answer: str  # the final answer; empty if the loop ran out of turns

    @property
    def models(self) -> list[str]:
        return [step.model for step in self.steps]

    @property
    def cache_ratio(self) -> float:
        """Cached prompt tokens over prompt tokens, over the whole run."""
        prompt = sum(step.prompt_tokens for step in self.steps)
        return sum(step.cached_tokens for step in self.steps) / prompt if prompt else 0.0

    @property
    def switches(self) -> int:
        models = self.models
        return sum(1 for before, after in itertools.pairwise(models) if before != after)


def run_agent(
    client: httpx.Client,
    replicas: Sequence[str],
    affinity_id: str | None = None,
    *,
    model: str = "auto",
    max_turns: int = 12,
    on_step: Callable[[Step], None] | None = None,
    conversation: str = "",
) -> Run:
    """Run the tool loop once; turn N goes to replica N mod len(replicas). `conversation`
    ends the system prompt, so that two runs share no prompt-cache prefix (as two real
    sessions, whose prompts carry a date or a directory, would not)."""
    headers = {"X-Model-Affinity": affinity_id} if affinity_id else {}
    system = f"{SYSTEM_PROMPT} (conversation {conversation})" if conversation else SYSTEM_PROMPT
    messages: list[JsonObject] = [
        {"role": "system", "content": system},
        {"role": "user", "content": USER_QUERY},
    ]
    steps: list[Step] = []
    for number in range(1, max_turns + 1):
        index = (number - 1) % len(replicas)
        body = {"model": model, "messages": messages, "tools": TOOLS, "max_tokens": 800}
        response = client.post(
            f"{replicas[index]}/v1/chat/completions", json=body, headers=headers
        )
        message = _message(response)
        prompt, cached = _usage(response)
        calls: list[JsonObject] = message.get("tool_calls") or []
        names = tuple(str(call["function"]["name"]) for call in calls)
        answer = "" if calls else str(message.get("content") or "").strip()
        step = Step(
            number, index + 1, response.headers.get("x-gateway-model", "?"),
            response.headers.get("x-gateway-route", ""),
            response.headers.get("x-model-affinity-status", ""), names, answer, prompt, cached,
        )
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if not calls:
            return Run(tuple(steps), answer)
        messages.append(
            {"role": "assistant", "content": message.get("content"), "tool_calls": calls}
        )
        for call in calls:
            function = call["function"]
            messages.append({
                "role": "tool", "tool_call_id": call["id"],
                "content": tool_result(function["name"], _arguments(function.get("arguments"))),
            })
    return Run(tuple(steps), "")


def _message(response: httpx.Response) -> JsonObject:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code != 200 or not isinstance(payload, dict):
        detail = payload.get("error", payload) if isinstance(payload, dict) else response.text[:200]
        raise AgentError(f"the gateway answered {response.status_code}: {detail}")
    try:
        message = payload["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise AgentError(f"the gateway's answer has no message: {str(payload)[:200]}") from None
    if not isinstance(message, dict):
        raise AgentError("the gateway's answer has no message")
    return message


def _usage(response: httpx.Response) -> tuple[int, int]:
    """(prompt tokens, cached prompt tokens) of an OpenAI response; zeros when not reported."""
    counts = usage_of(response.content)
    return (0, 0) if counts is None else (counts["prompt_tokens"], counts["cached_prompt_tokens"])


def _arguments(raw: Any) -> JsonObject:
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}  # a model wrote broken JSON: the tool answers "no data", as a real one would
    return value if isinstance(value, dict) else {}

"""The demo's gateway config, built as a mapping (the same shape as a config.yaml).

Two routing preferences split an agent's turns by what they say. A first turn asks for an
investigation ("use the tools to research...") and matches `tool_selection`; every later turn
carries tool results - throughput, latency, case studies - and matches `result_analysis`. The
builtin router scores the latest turn (the last user message plus the tool results after it)
against each preference's name, description and examples, so the split comes from the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TOOL_SELECTION = "tool_selection"
RESULT_ANALYSIS = "result_analysis"


@dataclass(frozen=True, slots=True)
class Models:
    """Which model serves each route, and the default for turns that match neither."""

    selection: str
    analysis: str
    default: str
    keys: Mapping[str, str]  # provider -> access_key as written in the config ($VAR)


# Offline, the simulator plays all three (it echoes whichever model it is asked for).
SIMULATED = Models(
    "anthropic/claude-sonnet-4-20250514", "openai/gpt-4o", "openai/gpt-4o-mini",
    {"openai": "sim-key", "anthropic": "sim-key"},
)
_OPENAI = {"openai": "$OPENAI_API_KEY"}
_ANTHROPIC = {"anthropic": "$ANTHROPIC_API_KEY"}


def preferences(models: Models) -> list[dict[str, Any]]:
    return [
        {
            "name": TOOL_SELECTION,
            "description": (
                "planning an investigation: choosing which tools to call, and with which "
                "arguments, to look up the facts a question needs before answering it"
            ),
            "examples": [
                "Use the tools to research the options before you answer",
                "Look this up with the available tools first",
                "Which tool should we call to investigate this?",
            ],
            "models": [models.selection],
        },
        {
            "name": RESULT_ANALYSIS,
            "description": (
                "analysing tool results: comparing measurements such as throughput, latency "
                "and scaling, weighing evidence from benchmarks and case studies, and drawing "
                "a conclusion"
            ),
            "examples": [
                "Benchmark results: 12,000 requests/s with p99 latency 35 ms under a "
                "write-heavy load",
                "Case study: the team moved to a replicated cluster and halved its latency",
                "Compare these measurements and say which option performs better",
            ],
            "models": [models.analysis],
        },
    ]


def real_models(environ: Mapping[str, str]) -> Models | None:
    """Real providers for the keys that are set (the config names them as $VAR); None if none."""
    openai, anthropic = bool(environ.get("OPENAI_API_KEY")), bool(environ.get("ANTHROPIC_API_KEY"))
    if openai and anthropic:
        return Models(
            "anthropic/claude-sonnet-4-20250514", "openai/gpt-4o", "openai/gpt-4o-mini",
            {**_OPENAI, **_ANTHROPIC},
        )
    if openai:
        return Models("openai/gpt-4o-mini", "openai/gpt-4o", "openai/gpt-4o-mini", _OPENAI)
    if anthropic:
        return Models(
            "anthropic/claude-sonnet-4-20250514", "anthropic/claude-3-5-haiku-20241022",
            "anthropic/claude-3-5-haiku-20241022", _ANTHROPIC,
        )
    return None


def session_cache(redis_url: str | None, key_prefix: str) -> dict[str, Any]:
    if redis_url is None:
        return {"type": "memory"}
    return {"type": "redis", "url": redis_url, "key_prefix": key_prefix}


def demo_config(
    models: Models, cache: dict[str, Any], simulator_url: str | None = None
) -> dict[str, Any]:
    """The whole config; with `simulator_url` every provider points at the simulator."""
    names = dict.fromkeys((models.selection, models.analysis, models.default))
    providers: list[dict[str, Any]] = []
    for name in names:
        provider: dict[str, Any] = {"model": name, "access_key": models.keys[name.split("/", 1)[0]]}
        if simulator_url is not None:
            provider["base_url"] = simulator_url
        if name == models.default:
            provider["default"] = True
        providers.append(provider)
    return {
        "version": "v0.4.0",
        "model_providers": providers,
        "routing_preferences": preferences(models),
        "routing": {
            "router": {"type": "builtin", "threshold": 0.2},
            # Short: with a shared REDIS_URL the demo's pins should not outlive it by much.
            "session_ttl_seconds": 300,
            "session_cache": cache,
        },
        "upstream": {"max_retries": 1 if simulator_url is None else 0},
        "logging": {"level": "warning"},
        # The demo stops its replicas itself, maybe mid-turn after a Ctrl-C: no long drain.
        "server": {"drain_timeout_seconds": 2},
    }


def with_session_cache(raw: Mapping[str, Any], cache: dict[str, Any]) -> dict[str, Any]:
    """A user's config (`--config`) with the demo's pin store, so the replicas share pins."""
    config = dict(raw)
    routing = dict(config.get("routing") or {})
    routing["session_cache"] = cache
    config["routing"] = routing
    return config

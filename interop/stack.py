"""The gateway side of the run: a private Redis, the simulator, two replicas and their config.

Processes come from the demo's runner (own process groups, logs in the work directory,
stopped in order). The config has two routing preferences and the simulator behind the
`anthropic/*` and `openai/*` wildcards, so every model name a harness asks for (main loop,
sub-agents, side calls, dated snapshots) is served with no name written here; one concrete
model is the default, because a wildcard cannot be. Pins and stored responses live in the
private Redis, shared by both replicas.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.config import load_config
from gateway.demo.runner import Child, Processes, StartError

# What each CLI asks for when not told otherwise (Claude Code 2.1.197, Codex 0.171.0).
CLAUDE_MAIN = "claude-opus-4-8"
CODEX_MAIN = "gpt-6.2-sol"
SIM_KEY = "sim-key"


def gateway_config(simulator_url: str, redis_url: str) -> dict[str, Any]:
    # The preferences name models the wildcards serve (no entry of their own).
    anthropic, openai = f"anthropic/{CLAUDE_MAIN}", f"openai/{CODEX_MAIN}"
    providers: list[dict[str, Any]] = [
        {"model": anthropic, "default": True},  # a wildcard cannot be the default
        {"model": "anthropic/*"},
        {"model": "openai/*"},
    ]
    return {
        "version": "v0.4.0",
        "model_providers": [p | {"base_url": simulator_url, "access_key": SIM_KEY} for p in providers],
        "routing_preferences": [
            {"name": "code_search",
             "description": "finding and reading source files: listing directories, globbing file "
                            "names, grepping for symbols, reading a file",
             "examples": ["Which files are in this project?", "Find where add is defined"],
             "models": [anthropic]},
            {"name": "explanation",
             "description": "explaining what was found: summarising tool results, describing what "
                            "code does, answering the question in prose",
             "examples": ["No files found", "File does not exist", "Based on these results"],
             "models": [openai]},
        ],
        "routing": {
            "router": {"type": "builtin", "threshold": 0.2},
            "session_ttl_seconds": 600,
            "session_cache": {"type": "redis", "url": redis_url, "key_prefix": "agw-interop"},
        },
        "upstream": {"max_retries": 0},
        "logging": {"level": "warning"},
        "server": {"drain_timeout_seconds": 2},
    }


@dataclass
class Stack:
    simulator: Child
    replicas: list[Child]
    redis_port: int

    @property
    def replica_urls(self) -> list[str]:
        return [child.url for child in self.replicas]


def start(processes: Processes, workdir: Path, replicas: int = 2) -> Stack:
    redis = processes.start_redis()
    if redis is None:
        raise StartError("redis-server is not installed (apt-get install redis-server)")
    simulator = processes.start_simulator()
    for child in (redis, simulator):
        processes.wait_ready(child)  # a child may move to another port if its first was taken
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(
        gateway_config(simulator.url, f"redis://127.0.0.1:{redis.port}/0"), sort_keys=False))
    load_config(str(path))  # a config error once, with its key path, not once per replica
    children = [processes.start_replica(n, path) for n in range(1, replicas + 1)]
    for child in children:
        processes.wait_ready(child)
    return Stack(simulator, children, redis.port)

"""`affinity-gateway demo`: the seed demo, end to end, offline by default.

A database-selection agent runs the same tool loop twice through two gateway replicas sharing
Redis, without and with `X-Model-Affinity`: without it the model switches as the turns change
what they say; with it the first turn's model serves every turn. `main` runs it; `agent` is the
tool loop; `config` the demo's routing preferences; `runner` starts and stops the processes.
The CLI imports this module for every command, so the heavy imports wait for `run`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    providers = parser.add_mutually_exclusive_group()  # a config's own providers, or the simulator
    providers.add_argument(
        "--config", metavar="FILE",
        help="run against this gateway config's providers (keys from the environment); its "
        "session_cache is replaced by the demo's Redis",
    )
    parser.add_argument("--replicas", type=int, default=2, help="gateway replicas (default 2)")
    providers.add_argument(
        "--offline", action="store_true",
        help="use the simulator even when OPENAI_API_KEY or ANTHROPIC_API_KEY is set",
    )
    parser.add_argument(
        "--ttft-ms", type=float, default=0.0,
        help="offline: the simulator's time to first token, to watch turns arrive (default 0)",
    )


def run(args: argparse.Namespace) -> int:
    from gateway.demo.main import run as run_demo

    return run_demo(args)

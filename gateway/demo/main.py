"""The demo's run: start its processes, run the agent twice, print what happened, stop them.

It starts the simulator, a Redis (REDIS_URL, else a private redis-server, else none), gateway
replicas on a demo config, and runs a database-selection agent twice - without and with
`X-Model-Affinity` - sending each turn to the next replica. Without the header each turn is
routed on what it says, so the model switches; with it the first turn's model is pinned in
Redis and every replica serves it. Everything it started is stopped on the way out.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from gateway.config import ConfigError, load_config
from gateway.demo import config as demo_config
from gateway.demo.agent import AgentError, Run, Step, run_agent
from gateway.demo.runner import Processes, StartError, delete_keys, redis_answers


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agw-demo-") as workdir, _stop_signals():
        processes = Processes(Path(workdir))
        shared: tuple[str, str] | None = None  # (REDIS_URL, prefix) to clean up afterwards
        try:
            shared = _shared_redis()
            return _demo(args, processes, Path(workdir), shared)
        except KeyboardInterrupt:
            print("\ninterrupted", flush=True)
            return 130
        except (StartError, AgentError, ConfigError, httpx.HTTPError) as error:
            print(f"demo failed: {error}", file=sys.stderr, flush=True)
            return 1
        finally:
            with _signals_ignored():
                count = len(processes.children)
                killed = processes.stop()
                if shared is not None:
                    _forget_pins(*shared)
            note = f" ({', '.join(killed)} had to be killed)" if killed else ""
            plural = "" if count == 1 else "es"
            print(f"stopped the {count} process{plural} the demo started{note}; "
                  f"{time.monotonic() - started:.1f} s in all", flush=True)


def _demo(
    args: argparse.Namespace, processes: Processes, workdir: Path, shared: tuple[str, str] | None
) -> int:
    prefix = shared[1] if shared else f"agw-demo-{uuid.uuid4().hex[:12]}"
    user_config = _read(args.config) if args.config else None  # before starting anything
    redis_url, redis_line = _redis(processes, shared)
    cache = demo_config.session_cache(redis_url, prefix)
    replicas = max(1, args.replicas) if redis_url else 1
    config, providers_line = _config(args, user_config, cache, processes)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    loaded = load_config(str(path))  # fail here, with the key path, not in every replica
    children = [processes.start_replica(n, path) for n in range(1, replicas + 1)]
    for child in processes.children:
        processes.wait_ready(child)  # the simulator and the replicas started together
    width = max(len(name) for name in loaded.models if "/" in name)

    say("Affinity Gateway demo: a database-selection agent (PostgreSQL or MongoDB?), run twice")
    say(f"  providers : {providers_line}")
    say(f"  pins      : {redis_line}")
    for child in children:
        say(f"  {child.name} : {child.url}")
    for preference in loaded.preferences:
        say(f"  route     : {preference.name} -> {', '.join(preference.models)}")
    urls = [child.url for child in children]
    affinity_id = f"demo-{uuid.uuid4().hex[:8]}"
    with httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0)) as client:
        say("\nRun 1: without X-Model-Affinity (every turn is routed on what it says)")
        first = run_agent(client, urls, on_step=_printer(width), conversation="1")
        say(f"Without affinity: model switched {first.switches} time(s)")
        say(f"\nRun 2: with X-Model-Affinity: {affinity_id} (turn 1's model is pinned)")
        second = run_agent(client, urls, affinity_id, on_step=_printer(width), conversation="2")
        say(_summary(second))
    say(f"\nPrompt-cache hit ratio: without affinity {first.cache_ratio:.0%}, "
        f"with affinity {second.cache_ratio:.0%} (cached prompt tokens / prompt tokens)")
    say("\nFinal answer (run 2):")
    answer = second.answer or "(none: the agent ran out of turns)"
    for line in answer.splitlines():
        say(textwrap.fill(line, 98, initial_indent="  ", subsequent_indent="  "))
    return 0 if len(set(second.models)) == 1 else 1


def say(text: str) -> None:
    print(text, flush=True)  # line by line even into a pipe (`make demo | tee`)


def _summary(run: Run) -> str:
    models = sorted(set(run.models))
    if len(models) == 1:
        return f"With affinity: {models[0]} for all {len(run.steps)} turns"
    return f"With affinity: the pin did not hold - {', '.join(models)} ({run.switches} switches)"


def _printer(width: int) -> Callable[[Step], None]:
    previous: list[str] = []

    def show(step: Step) -> None:
        tools = ", ".join(step.tools) if step.tools else "final answer"
        detail = f"route {step.route or '-'}"
        if step.affinity != "none":  # a hit reports the route the pin came from
            detail = f"affinity {step.affinity}" + (f", {detail}" if step.affinity == "new" else "")
        switched = "  <- switched" if previous and previous[-1] != step.model else ""
        previous.append(step.model)
        print(
            f"  turn {step.number:<2} [{step.model:<{width}}] (replica {step.replica})  "
            f"{tools:<22} {detail}{switched}",
            flush=True,
        )

    return show


def _shared_redis() -> tuple[str, str] | None:
    url = os.environ.get("REDIS_URL")
    return (url, f"agw-demo-{uuid.uuid4().hex[:12]}") if url else None


def _redis(processes: Processes, shared: tuple[str, str] | None) -> tuple[str | None, str]:
    if shared is not None:
        url = shared[0]
        if not redis_answers(url):
            raise StartError(f"REDIS_URL ({_redact(url)}) does not answer")
        return url, f"Redis at REDIS_URL ({_redact(url)}), keys under {shared[1]}:"
    child = processes.start_redis()
    if child is None:
        return None, (
            "memory store, one replica (no REDIS_URL and no redis-server: install redis-server "
            "to see two replicas share pins)"
        )
    processes.wait_ready(child)
    return f"redis://127.0.0.1:{child.port}/0", f"a private redis-server on 127.0.0.1:{child.port}"


def _read(path: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(path, f"cannot read it: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, "expected a YAML mapping")
    return raw


def _config(
    args: argparse.Namespace, user_config: dict[str, Any] | None, cache: dict[str, Any],
    processes: Processes,
) -> tuple[dict[str, Any], str]:
    if user_config is not None:
        return demo_config.with_session_cache(user_config, cache), f"from {args.config}"
    models = None if args.offline else demo_config.real_models(os.environ)
    if models is not None:
        keys = " and ".join(models.keys.values())
        line = f"real providers (keys from {keys}; --offline for the simulator)"
        return demo_config.demo_config(models, cache), line
    simulator = processes.start_simulator(args.ttft_ms)
    config = demo_config.demo_config(demo_config.SIMULATED, cache, simulator.url)
    return config, f"offline: the simulator at {simulator.url} plays every model"


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _forget_pins(url: str, prefix: str) -> None:
    try:
        delete_keys(url, prefix)
    except Exception as error:  # cleanup must not hide the demo's own outcome
        print(f"could not delete the demo's pins under {prefix}: ({type(error).__name__})")


@contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGTERM ends the demo like Ctrl-C does, so its children are stopped too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C while stopping must not leave children behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: Mapping[int, Any] = {
        signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

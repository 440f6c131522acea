"""`affinity-gateway serve | simulate | demo | check-config`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from gateway.config import Config, ConfigError, load_config, render_config
from gateway.logs import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="affinity-gateway", description="An LLM gateway that pins agent sessions to one model."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    serve.add_argument("--host", help="bind address (default: the config's listener, else 0.0.0.0)")
    serve.add_argument("--port", type=port_number, help="port (default: the config's listener, else 12000)")
    serve.add_argument("--workers", type=positive, default=1, help="worker processes (default 1)")
    serve.add_argument("--log-level", type=str.lower,
                       choices=("debug", "info", "warning", "error", "critical"),
                       help="(default: the config's logging.level)")

    simulate = commands.add_parser("simulate", help="a local fake OpenAI/Anthropic provider")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=port_number, default=8000)
    simulate.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token")
    simulate.add_argument("--tokens-per-s", type=float, default=0.0, help="0: as fast as possible")
    simulate.add_argument("--fail-rate", type=float, default=0.0, help="fraction answered with an error")
    simulate.add_argument("--fail-status", type=int, default=500)
    simulate.add_argument("--jitter-ms", type=float, default=0.0)
    simulate.add_argument("--seed", type=int, default=0)

    demo = commands.add_parser("demo", help="the seed demo: an agent loop without and with affinity")
    demo_module().add_arguments(demo)

    check = commands.add_parser("check-config", help="validate a config and print it resolved")
    check.add_argument("file", nargs="?", help="config file (or --config, as serve takes it)")
    check.add_argument("--config", dest="config_file", help=argparse.SUPPRESS)

    args = parser.parse_args(argv)
    if args.command == "check-config":
        file = args.file or args.config_file
        if file is None or (args.file and args.config_file):
            check.error("name one config file, as FILE or --config FILE")
        return check_config(file)
    if args.command == "simulate":
        return simulate_command(args)
    if args.command == "demo":
        return int(demo_module().run(args))
    return serve_command(args)


def demo_module() -> Any:
    from gateway import demo

    return demo


def check_config(path: str) -> int:
    from gateway.affinity import StoreRejected
    from gateway.affinity.startup import connect_or_reject

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        config = load_config(path)
        if config.routing.session_cache.type == "redis":
            connect_or_reject(config.routing.session_cache)  # what serve would refuse (no I/O)
    except (ConfigError, StoreRejected) as error:
        print(f"config error: {error}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(render_config(config), end="")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    from gateway.affinity import StoreRejected
    from gateway.affinity.startup import preflight
    from gateway.app import CONFIG_ENV, LOG_LEVEL_ENV
    from gateway.metrics import MULTIPROC_ENV

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 1
    level = (args.log_level or config.logging.level).upper()
    setup_logging(level, config.logging.format)
    for warning in config.warnings:
        logging.getLogger("gateway.config").warning("%s", warning)
    if args.workers > 1 and config.routing.session_cache.type == "memory":
        print(
            "config error: routing.session_cache: --workers > 1 needs the redis store "
            "(each worker would keep its own pins); set routing.session_cache.url",
            file=sys.stderr,
        )
        return 1
    try:  # a refused password or ACL is a config error, before any worker starts
        asyncio.run(preflight(config.routing))
    except StoreRejected as error:
        print(f"config error: {error}", file=sys.stderr)
        return 1
    os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    os.environ[LOG_LEVEL_ENV] = level
    metrics_dir = None
    if args.workers > 1:  # workers add up their metrics through files in a private directory
        metrics_dir = tempfile.mkdtemp(prefix="affinity-gateway-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    # uvicorn drains, then re-raises the SIGTERM it caught; a drained stop is a clean exit.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        _run_uvicorn(args, config, level)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:  # a larger one would wrap around to another port
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _run_uvicorn(args: argparse.Namespace, config: Config, level: str) -> None:
    import uvicorn

    from gateway.server import server_settings

    settings = server_settings(config, workers=args.workers, log_level=level.lower())
    if args.host:
        settings["host"] = args.host
    if args.port:
        settings["port"] = args.port
    uvicorn.run("gateway.app:app_from_env", factory=True, **settings)


def simulate_command(args: argparse.Namespace) -> int:
    from gateway.simulator import SimulatorSettings, run_simulator

    settings = SimulatorSettings(
        ttft_ms=args.ttft_ms, tokens_per_s=args.tokens_per_s, fail_rate=args.fail_rate,
        fail_status=args.fail_status, jitter_ms=args.jitter_ms, seed=args.seed,
    )
    run_simulator(settings, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

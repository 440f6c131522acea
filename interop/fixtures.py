"""Turn an interop capture into small, sanitized request fixtures for tests/fixtures/harness/.

`python -m interop.fixtures .interop/captures/<run> [--out tests/fixtures/harness]` picks one
request of each kind (a harness's first turn, a turn with tool results, a sub-agent per model,
Codex's two tool shapes), then keeps their shape and drops their bulk: long texts are cut,
tool lists keep a few entries of each kind, credentials stay masked, and scratch paths and
per-install ids are replaced by fixed ones, so a fixture changes only when the harness does.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from interop.capture import Exchange, load

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "harness"
_DROP_HEADERS = frozenset({"host", "content-length", "connection", "accept-encoding"})
_TEXT = 240  # characters kept of any long text
_FUNCTIONS = 3  # function tools kept per list (every other kind of tool is kept)
_SCRUB = [  # scratch paths and per-install ids -> fixed values
    (re.compile(r"/tmp/agw-interop-[^/\s\"\\]+/scratch/project"), "/home/user/project"),
    (re.compile(r"/tmp/agw-interop-[^/\s\"\\]+/scratch/home-[^/\s\"\\]+"), "/home/user"),
    (re.compile(r"/tmp/agw-interop-[^/\s\"\\]+"), "/tmp/scratch"),
    (re.compile(r'(device_id\\*":\\*")[0-9a-f]{64}'), r"\g<1>" + "0123456789abcdef" * 4),
    (re.compile(r'(installation_id\\*":\\*")[0-9a-f-]{36}'), r"\g<1>00000000-0000-4000-8000-000000000000"),
]


def sanitize(exchange: Exchange, source: str) -> dict[str, Any]:
    headers = {k: v for k, v in exchange.headers.items() if k not in _DROP_HEADERS}
    fixture = _scrub({"source": source, "method": exchange.method, "path": exchange.path,
                      "headers": headers, "body": exchange.body})
    if isinstance(fixture["body"], dict):
        fixture["body"] = _trim(fixture["body"])  # after the scrub, which needs whole paths
    return fixture


def _scrub(value: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(value, ensure_ascii=False)
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return dict(json.loads(text))


def _trim(value: Any, key: str = "") -> Any:
    if isinstance(value, str):
        if len(value) <= _TEXT or key in ("arguments", "input", "definition"):
            return value
        return f"{value[:_TEXT]} [... {len(value) - _TEXT} characters trimmed]"
    if isinstance(value, list):
        items = _trim_tools(value) if key == "tools" else value
        return [_trim(item, key if key == "content" else "") for item in items]
    if isinstance(value, dict):
        return {k: (v if k == "x-codex-turn-metadata" else _trim(v, k)) for k, v in value.items()}
    return value


def _trim_tools(tools: list[Any]) -> list[Any]:
    """The first few function tools, and every tool of another kind (namespace, custom, hosted)."""
    functions = 0
    kept = []
    for tool in tools:
        is_function = isinstance(tool, dict) and tool.get("type", "function") == "function"
        if is_function and "input_schema" not in tool:  # Anthropic tools are all kept
            functions += 1
            if functions > _FUNCTIONS:
                continue
        kept.append(tool)
    return kept


Picker = Callable[[list[Exchange]], Exchange | None]


def _body(exchange: Exchange) -> dict[str, Any]:
    return exchange.body if isinstance(exchange.body, dict) else {}


def _claude(exchanges: list[Exchange], *, agents: bool, sub: bool) -> list[Exchange]:
    """Claude Code's Messages requests: the main loop (sub=False) or sub-agents, of the
    session that has the Agent tool (agents=True) or not."""
    return [
        e for e in exchanges
        if e.path == "/v1/messages" and e.harness.startswith("claude-code")
        and bool(e.headers.get("x-claude-code-agent-id")) == sub
        and (sub or any(t.get("name") == "Agent" for t in _body(e).get("tools", [])) == agents)
    ]


def _codex(exchanges: list[Exchange], harness: str) -> list[Exchange]:
    return [e for e in exchanges if e.harness == harness and e.path.endswith("/responses")]


def picks(exchanges: list[Exchange]) -> dict[str, Exchange]:
    """Fixture name -> the captured request it is made from."""
    chosen: dict[str, Exchange | None] = {}
    main = _claude(exchanges, agents=False, sub=False)
    chosen["claude_code_messages_first_turn"] = next(iter(main), None)
    chosen["claude_code_messages_tool_results"] = max(
        main, key=lambda e: len(_body(e).get("messages", [])), default=None)
    with_agents = _claude(exchanges, agents=True, sub=False)
    chosen["claude_code_messages_system_in_messages"] = next(iter(with_agents), None)
    for exchange in _claude(exchanges, agents=False, sub=True):
        name = "claude_code_messages_subagent_" + re.sub(r"\W+", "_", str(_body(exchange).get("model")))
        chosen.setdefault(name, exchange)
    for harness, prefix in (("codex-capture", "codex_responses"),
                            ("codex-capture-classic", "codex_responses_classic")):
        turns = _codex(exchanges, harness)
        chosen[f"{prefix}_first_turn"] = turns[0] if turns else None
        chosen[f"{prefix}_tool_output"] = turns[1] if len(turns) > 1 else None
    return {name: exchange for name, exchange in chosen.items() if exchange is not None}


SESSION = "claude_code_session_lanes"
_PER_LANE = 3  # requests kept of each lane in the session fixture


def session_picks(exchanges: list[Exchange]) -> list[Exchange]:
    """A whole Claude Code session with sub-agents, in arrival order, each lane's first few
    requests: for a replay across replicas (one model per lane, `hit` after the first)."""
    with_agents = _claude(exchanges, agents=True, sub=False)
    if not with_agents:
        return []
    session = with_agents[0].headers.get("x-claude-code-session-id")
    kept: list[Exchange] = []
    per_lane: dict[str, int] = {}
    for exchange in exchanges:
        if exchange.path != "/v1/messages" or exchange.headers.get("x-claude-code-session-id") != session:
            continue
        lane = exchange.headers.get("x-claude-code-agent-id") or str(_body(exchange).get("model"))
        per_lane[lane] = per_lane.get(lane, 0) + 1
        if per_lane[lane] <= _PER_LANE:
            kept.append(exchange)
    return kept


def _source(exchange: Exchange) -> str:
    agent = exchange.headers.get("user-agent", "?")
    return f"{agent}; make interop capture ({exchange.harness} via {exchange.target}), trimmed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interop.fixtures", description=__doc__.split("\n")[0])
    parser.add_argument("captures", type=Path, help="a capture directory written by `make interop`")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="write only these fixtures")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    exchanges = load(args.captures)
    session = session_picks(exchanges)
    if session and (not args.only or SESSION in args.only):
        path = args.out / f"{SESSION}.json"
        requests = [sanitize(exchange, _source(exchange)) for exchange in session]
        path.write_text(json.dumps({"source": requests[0]["source"], "requests": requests}, indent=1,
                                   ensure_ascii=False) + "\n")
        print(f"{path} ({path.stat().st_size} bytes) from {len(session)} requests")
    for name, exchange in picks(exchanges).items():
        if args.only and name not in args.only:
            continue
        path = args.out / f"{name}.json"
        fixture = sanitize(exchange, _source(exchange))
        path.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
        print(f"{path} ({path.stat().st_size} bytes) from {exchange.seq:05d}-{exchange.harness}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

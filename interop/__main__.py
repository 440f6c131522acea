"""`python -m interop` (`make interop`): one scripted session of each real harness, then a report.

Starts a private Redis, the simulator, two gateway replicas and the recording round-robin
front; runs two Claude Code sessions at once, then Codex twice (its default model, whose tools
travel in an `additional_tools` input item, and a classic one with top-level tools and the
hosted `web_search`), all through the front in a scratch directory; prints per session and
lane what the gateway did; stops everything. The exit status is 1 if a safety check failed
(the scratch project changed, or a harness tried to reach beyond the machine: the egress trap
refused it) or an affinity check did (report.check: one model per lane, `hit` after each
lane's first request, no non-2xx, no two sessions sharing a pin, each CLI finished).
`--capture-stub` also runs Codex against the Responses capture stub (shapes with no gateway).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from gateway.demo.runner import Processes, StartError
from interop import capture, harnesses, report, stack
from interop.front import Front
from interop.servers import EgressTrap, ThreadServer
from interop.stub import ResponsesStub

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".interop"
CLASSIC_CODEX_MODEL = "gpt-5-codex"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interop", description=__doc__.split("\n")[0])
    parser.add_argument("--cli-dir", type=Path, default=CACHE / "node_modules" / ".bin",
                        help="where `claude` and `codex` are (make interop installs them there)")
    parser.add_argument("--captures", type=Path, help="capture directory (default: .interop/captures/<time>)")
    parser.add_argument("--only", choices=("claude-code", "codex"), help="run one harness only")
    parser.add_argument("--claude-timeout", type=float, default=900.0, help="seconds (default 900)")
    parser.add_argument("--codex-timeout", type=float, default=180.0, help="seconds (default 180)")
    parser.add_argument("--capture-stub", action="store_true",
                        help="also run Codex against the Responses capture stub (no gateway)")
    parser.add_argument("--direct", action="store_true",
                        help="also run the Claude Code sessions straight against the simulator (no "
                             "gateway), to capture the requests the gateway refuses today")
    args = parser.parse_args(argv)
    args.cli_dir = args.cli_dir.resolve()  # the CLIs run in the scratch directory
    missing = [name for name in ("claude", "codex") if not (args.cli_dir / name).exists()]
    if missing:
        print(f"not installed in {args.cli_dir}: {', '.join(missing)} (`make interop` installs them)",
              file=sys.stderr)
        return 2
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    recorder = capture.Recorder(args.captures or CACHE / "captures" / stamp)
    with tempfile.TemporaryDirectory(prefix="agw-interop-") as tmp:
        try:
            return _run(args, Path(tmp), recorder)
        except StartError as error:
            print(f"interop: could not start the stack: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130


def _run(args: argparse.Namespace, tmp: Path, recorder: capture.Recorder) -> int:
    scratch = harnesses.Scratch.create(tmp / "scratch")
    logs = tmp / "logs"
    logs.mkdir()
    processes = Processes(logs)
    trap = EgressTrap().start()
    servers: list[ThreadServer] = []
    try:
        gateway = stack.start(processes, logs)
        front = ThreadServer(Front(gateway.replica_urls, recorder), "front").start()
        servers.append(front)
        urls = {"front": front.url}
        # The stub answers Codex with no gateway (how the Codex fixtures were captured before
        # /v1/responses existed); the direct front bypasses the gateway: started when asked for.
        if args.capture_stub:
            servers.append(stub := ThreadServer(ResponsesStub(recorder), "Responses capture stub").start())
            urls["stub"] = stub.url
        if args.direct:
            servers.append(direct := ThreadServer(
                Front([gateway.simulator.url], recorder, "simulator"), "direct front").start())
            urls["direct"] = direct.url
        _say(f"redis 127.0.0.1:{gateway.redis_port}, simulator {gateway.simulator.url}, replicas "
             f"{', '.join(gateway.replica_urls)}; front {front.url}; captures in {recorder.directory}")
        before = scratch.fingerprint()
        names: dict[str, str] = {}  # session id -> which scripted session it was
        results: list[harnesses.Result] = []
        for label, session in _sessions(args, scratch, urls, trap.url):
            recorder.harness = trap.harness = label
            _say(f"\n== {label}: running")
            for result in session():
                _say(_outcome(result))
                results.append(result)
                if result.session:
                    names[result.session] = result.harness
        untouched = scratch.fingerprint() == before
    finally:
        for server in servers:
            server.stop()
        processes.stop()
        trap.stop()
    return _report(recorder, trap, untouched, names, results)


def _report(recorder: capture.Recorder, trap: EgressTrap, untouched: bool, names: dict[str, str],
            results: list[harnesses.Result]) -> int:
    exchanges = capture.load(recorder.directory)
    _say("\n== per session and lane (through the front: two replicas, one Redis)")
    _say(report.render([e for e in exchanges if e.target == "gateway"], names) or "  (no requests)")
    direct = [e for e in exchanges if e.target == "simulator"]
    if direct:
        _say("\n== per session and lane, straight to the simulator (--direct: no gateway, no pins)")
        _say(report.render(direct, names, gateway=False))
    for target, what in (("stub", "the Responses capture stub"), ("simulator", "the simulator directly")):
        captured = Counter(e.harness for e in exchanges if e.target == target)
        for harness, count in captured.items():
            _say(f"{harness}: {count} request(s) recorded through {what} (not the gateway), "
                 "to capture the shapes the gateway cannot serve yet.")
    through = [e for e in exchanges if e.target == "gateway"]
    _say("\n== non-2xx answers from the gateway\n" + (report.failures(through, names) or "  none"))
    attempts = sorted({f"{harness} -> {target}" for harness, target in trap.attempts})
    _say("\n== safety\n  egress trap: " + ("; ".join(attempts) or "no attempt to leave the machine"))
    _say(f"  scratch project: {'unchanged' if untouched else 'CHANGED'}")
    _say(f"  captures: {recorder.directory}")
    # Runs that bypass the gateway (--direct, --capture-stub) are for captures, not checked.
    unfinished = [r for r in results if r.returncode != 0 and "-direct" not in r.harness
                  and "-capture" not in r.harness]
    problems = report.check(through, names) + [
        f"{r.harness}: " + ("killed at the deadline" if r.returncode is None else f"exit {r.returncode}")
        for r in unfinished
    ]
    _say("\n== affinity checks\n" + ("\n".join(f"  FAILED {p}" for p in problems) or "  all passed"))
    return 0 if untouched and not attempts and not problems else 1


Session = Callable[[], list[harnesses.Result]]


def _sessions(args: argparse.Namespace, scratch: harnesses.Scratch, urls: dict[str, str],
              trap: str) -> list[tuple[str, Session]]:
    """The scripted sessions in order, each run by a label; `urls`: the front, and the stub and
    the direct front when asked for."""
    sessions: list[tuple[str, Session]] = []
    claude = partial(harnesses.claude_code, args.cli_dir, scratch, trap_url=trap,
                     timeout=args.claude_timeout)
    codex = partial(harnesses.codex, args.cli_dir, scratch, trap_url=trap, timeout=args.codex_timeout)
    if args.only in (None, "claude-code"):
        # Two Claude Code sessions at once, so the replicas see them interleaved: one with
        # read-only tools, one that may also start sub-agents.
        sessions.append(("claude-code", lambda: _together(
            partial(claude, front_url=urls["front"], agents=False),
            partial(claude, front_url=urls["front"], agents=True))))
        if args.direct:
            sessions.append(("claude-code-direct", lambda: _together(
                partial(claude, front_url=urls["direct"], agents=False, suffix="-direct"),
                partial(claude, front_url=urls["direct"], agents=True, suffix="-direct"))))
    if args.only in (None, "codex"):
        sessions.append(("codex", lambda: [codex(base_url=f"{urls['front']}/v1", label="codex")]))
        # Codex sends its tools another way for its default model (code mode, tools in an
        # `additional_tools` input item) than for others (top-level `tools`, hosted web_search).
        sessions.append(("codex-classic", lambda: [codex(
            base_url=f"{urls['front']}/v1", label="codex-classic", model=CLASSIC_CODEX_MODEL)]))
        if args.capture_stub:
            sessions.append(("codex-capture", lambda: [
                codex(base_url=f"{urls['stub']}/v1", label="codex-capture")]))
            sessions.append(("codex-capture-classic", lambda: [codex(
                base_url=f"{urls['stub']}/v1", label="codex-capture-classic", model=CLASSIC_CODEX_MODEL)]))
    return sessions


def _together(*runs: Callable[[], harnesses.Result]) -> list[harnesses.Result]:
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda run: run(), runs))


def _outcome(result: harnesses.Result) -> str:
    status = "killed at the deadline" if result.returncode is None else f"exit {result.returncode}"
    tail = "\n".join(f"    {line}" for line in result.output.strip().splitlines()[-8:])
    return f"  {result.harness}: {status}\n{tail}"


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())

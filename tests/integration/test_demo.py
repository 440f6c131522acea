"""The seed demo: its routing, its agent loop across two replicas, and `affinity-gateway demo`."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from gateway.config import parse_config
from gateway.demo import config as demo_config
from gateway.demo import main as demo_main
from gateway.demo.agent import TOOLS, USER_QUERY, AgentError, run_agent, tool_result
from gateway.demo.runner import Processes, StartError
from gateway.routing import BuiltinRouter, Turn
from gateway.simulator.agent import Tool, next_call
from tests.support import RedisServer, ThreadServer, gateway, wait_for

SELECT, ANALYSE = demo_config.TOOL_SELECTION, demo_config.RESULT_ANALYSIS
PLAN = ["get_db_benchmarks"] * 2 + ["get_case_studies"] * 2 + ["check_feature_support"] * 2
STEP = re.compile(r"^  turn (\d+) +\[(\S+) *\] \(replica (\d+)\) +(\S.*?)  +(?:route|affinity) ")
ROOT = Path(__file__).resolve().parents[2]


def offline(upstream: str, redis_url: str | None) -> dict[str, Any]:
    cache = demo_config.session_cache(redis_url, f"agw-test-{uuid.uuid4().hex[:8]}")
    return demo_config.demo_config(demo_config.SIMULATED, cache, upstream)


def planned_results() -> list[str]:
    tools = tuple(Tool(t["function"]["name"], t["function"]["parameters"]) for t in TOOLS)
    made: tuple[tuple[str, dict[str, Any]], ...] = ()
    results = []
    while (call := next_call(tools, made)) is not None:
        made += ((call.name, call.arguments),)
        results.append(tool_result(call.name, call.arguments))
    return results


def test_turns_route_by_what_they_say() -> None:
    config = parse_config(offline("http://127.0.0.1:9", None), environ={})
    router = BuiltinRouter(config.preferences, config.routing.router.threshold)
    turns = [Turn("system", "You are an analyst."), Turn("user", USER_QUERY)]
    assert router.decide(turns) == SELECT
    for result in planned_results():  # the latest turn grows by one tool result per turn
        turns += [Turn("assistant", ""), Turn("tool", result)]
        assert router.decide(turns) == ANALYSE
    # Content, not position: a first turn full of measurements is analysis, and a later user
    # message asking for more research is tool selection again.
    assert router.decide([Turn("user", planned_results()[0])]) == ANALYSE
    assert router.decide([*turns, Turn("user", "Look this up with the tools first")]) == SELECT


def test_every_planned_call_has_a_result() -> None:
    results = planned_results()
    assert len(results) == len(PLAN)
    assert all(not r.startswith("error") and r.split(":")[0] for r in results)
    assert tool_result("get_db_benchmarks", {"database": "oracle"}).startswith("error: no data")
    assert tool_result("drop_table", {}).startswith("error: unknown tool")


def test_agent_switches_without_affinity_and_keeps_one_model_with_it(
    simulator: ThreadServer, redis_url: str
) -> None:
    config = offline(simulator.url, redis_url)
    with gateway(config) as one, gateway(config) as two, httpx.Client(timeout=10) as client:
        urls = [one.url, two.url]
        free = run_agent(client, urls)
        pinned = run_agent(client, urls, "session-7")
        pin = client.get(f"{two.url}/v1/affinity/session-7").json()

    assert [s.tools for s in free.steps] == [(name,) for name in PLAN] + [()]
    assert [s.route for s in free.steps] == [SELECT] + [ANALYSE] * 6
    assert [s.replica for s in free.steps] == [1, 2, 1, 2, 1, 2, 1]
    assert len(set(free.models)) > 1 and free.switches == 1
    assert free.answer.startswith("Based on 6 tool results")

    assert pinned.models == [demo_config.SIMULATED.selection] * 7
    assert [s.affinity for s in pinned.steps] == ["new"] + ["hit"] * 6
    assert [s.replica for s in pinned.steps] == [1, 2, 1, 2, 1, 2, 1]
    assert pin["model"] == demo_config.SIMULATED.selection


def test_parallel_tool_calls_each_get_a_result_and_errors_say_what_the_gateway_said() -> None:
    sent: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        headers = {"x-gateway-model": "openai/gpt-4o", "x-gateway-route": "r",
                   "x-model-affinity-status": "none"}
        if len(sent) == 1:  # a real model may ask for several tools in one turn
            calls = [{"id": f"c{n}", "type": "function", "function": {
                "name": "get_case_studies", "arguments": json.dumps({"database": db})}}
                for n, db in enumerate(["postgresql", "mongodb"])]
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": calls}
        else:
            message = {"role": "assistant", "content": "PostgreSQL."}
        return httpx.Response(200, json={"choices": [{"message": message}]}, headers=headers)

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        run = run_agent(client, ["http://a", "http://b"])
    assert [s.tools for s in run.steps] == [("get_case_studies", "get_case_studies"), ()]
    assert run.answer == "PostgreSQL." and [s.replica for s in run.steps] == [1, 2]
    tool_messages = [m for m in sent[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["c0", "c1"]
    assert tool_messages[1]["content"].startswith("MongoDB case studies: ")

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "model 'x' is not configured"}})

    with httpx.Client(transport=httpx.MockTransport(refuse)) as client, \
            pytest.raises(AgentError, match=r"404.*not configured"):
        run_agent(client, ["http://a"])


@pytest.mark.parametrize(
    ("environ", "models"),
    [
        ({"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"},
         {"anthropic/claude-sonnet-4-20250514", "openai/gpt-4o", "openai/gpt-4o-mini"}),
        ({"OPENAI_API_KEY": "k"}, {"openai/gpt-4o", "openai/gpt-4o-mini"}),
        ({"ANTHROPIC_API_KEY": "k"},
         {"anthropic/claude-sonnet-4-20250514", "anthropic/claude-3-5-haiku-20241022"}),
    ],
)
def test_real_providers_follow_the_keys_that_are_set(
    environ: dict[str, str], models: set[str]
) -> None:
    chosen = demo_config.real_models(environ)
    assert chosen is not None
    raw = demo_config.demo_config(chosen, demo_config.session_cache(None, "p"))
    assert all(p["access_key"].startswith("$") for p in raw["model_providers"])  # never the key
    config = parse_config(raw, environ=environ)
    assert {p.model for p in config.providers} == models
    assert demo_config.real_models({"OPENAI_API_KEY": ""}) is None


def test_keys_in_the_environment_choose_real_providers_unless_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-looking")
    processes = Processes(tmp_path)
    args = argparse.Namespace(config=None, offline=False, ttft_ms=0.0)
    try:
        config, line = demo_main._config(args, None, {"type": "memory"}, processes)
        assert line.startswith("real providers (keys from $OPENAI_API_KEY")
        assert processes.children == []  # no simulator
        assert all("base_url" not in p for p in config["model_providers"])
        assert "sk-real-looking" not in yaml.safe_dump(config)
        args.offline = True
        config, line = demo_main._config(args, None, {"type": "memory"}, processes)
        assert line.startswith("offline") and [c.name for c in processes.children] == ["simulator"]
    finally:
        processes.stop()


STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print('up', grandchild.pid, flush=True); time.sleep(60)\n"
)


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_kills_what_will_not_stop_and_what_it_started(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    child = processes.spawn("stubborn", lambda port: [sys.executable, "-c", STUBBORN], None)
    up = wait_for(lambda: re.search(r"up (\d+)", child.log.read_text()), timeout=20)
    grandchild = int(up[1])
    assert alive(grandchild)
    assert processes.stop(timeout=0.2) == ["stubborn"]
    assert child.process.returncode == -signal.SIGKILL and processes.children == []
    # It went with its process group (SIGKILL lands asynchronously, hence the wait).
    wait_for(lambda: not alive(grandchild), timeout=5, message="the grandchild survived")


def test_a_child_that_cannot_start_is_reported_with_its_output(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    argv = [sys.executable, "-c", "import sys; print('no such thing'); sys.exit(3)"]
    child = processes.spawn("broken", lambda port: argv, "/readyz")
    try:
        with pytest.raises(StartError, match=r"broken exited with 3:\nno such thing"):
            processes.wait_ready(child)
    finally:
        processes.stop()


def test_a_users_config_gets_the_demos_pin_store() -> None:
    raw = {"version": "v0.4.0", "routing": {"session_ttl_seconds": 60}, "model_providers": []}
    cache = demo_config.session_cache("redis://127.0.0.1:1/0", "agw-demo-x")
    merged = demo_config.with_session_cache(raw, cache)
    assert merged["routing"] == {"session_ttl_seconds": 60, "session_cache": cache}
    assert raw["routing"] == {"session_ttl_seconds": 60}


# `affinity-gateway demo` as a user runs it: a subprocess, with a deadline.

def demo_command() -> list[str]:
    return [str(Path(sys.executable).parent / "affinity-gateway"), "demo"]


def demo_env(**extra: str) -> dict[str, str]:
    """No keys, no REDIS_URL (never the machine's shared Redis); a marker children inherit."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"}}
    env.update(PYTHONUNBUFFERED="1", AGW_DEMO_TEST_MARK=uuid.uuid4().hex, **extra)
    return env


def marked(env: dict[str, str]) -> list[int]:
    """Processes still alive that inherited this run's marker (so: that the demo started)."""
    needle = f"AGW_DEMO_TEST_MARK={env['AGW_DEMO_TEST_MARK']}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue  # gone, or not ours
            if needle in environ.split(b"\0"):
                found.append(int(entry.name))
    return found


def leftovers(env: dict[str, str], output: str) -> list[str]:
    """What the demo left behind: marked processes, and listeners on the ports it printed
    (redis-server overwrites its environment with its process title; its port tells)."""
    left = [f"pid {pid}" for pid in marked(env)]
    shared = urlsplit(env.get("REDIS_URL", "")).port
    for port in {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", output)} - {shared}:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                left.append(f"port {port}")
    return left


def run_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*demo_command(), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert leftovers(env, result.stdout) == [], result.stdout
    assert result.stdout.count("127.0.0.1:") >= 2  # so the port check above checked something
    return result


def steps(output: str) -> list[tuple[int, str, int, str]]:
    return [(int(m[1]), m[2], int(m[3]), m[4]) for line in output.splitlines()
            if (m := STEP.match(line))]


def test_make_demo_shows_the_switch_and_the_pin_and_leaves_nothing_running() -> None:
    result = run_demo(demo_env())
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "offline: the simulator" in out and "a private redis-server on 127.0.0.1:" in out
    assert "  replica 1 : http://127.0.0.1:" in out and "  replica 2 : http://127.0.0.1:" in out
    found = steps(out)
    assert [s[0] for s in found] == [1, 2, 3, 4, 5, 6, 7] * 2
    assert [s[2] for s in found] == [1, 2, 1, 2, 1, 2, 1] * 2
    assert [s[3] for s in found] == [*PLAN, "final answer"] * 2
    free, pinned = found[:7], found[7:]
    assert len({s[1] for s in free}) == 2
    assert re.search(r"^Without affinity: model switched [1-9]\d* time\(s\)$", out, re.M)
    model = demo_config.SIMULATED.selection
    assert {s[1] for s in pinned} == {model}
    assert f"\nWith affinity: {model} for all 7 turns\n" in out
    assert "stopped the 4 processes the demo started" in out


def test_demo_uses_redis_url_without_touching_other_keys(redis_server: RedisServer) -> None:
    redis_server.command("SET", "someone-elses-key", "keep")
    result = run_demo(demo_env(REDIS_URL=redis_server.url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Redis at REDIS_URL ({redis_server.url})" in result.stdout
    assert "stopped the 3 processes" in result.stdout  # simulator and two replicas, no redis
    assert redis_server.command("GET", "someone-elses-key") == "keep"
    assert redis_server.command("KEYS", "agw-demo-*") == []  # its own pins are cleaned up


def test_without_redis_it_runs_one_replica_on_the_memory_store(tmp_path: Path) -> None:
    result = run_demo(demo_env(PATH=str(tmp_path)))  # no redis-server on this PATH
    assert result.returncode == 0, result.stdout + result.stderr
    assert "memory store, one replica" in result.stdout
    assert {s[2] for s in steps(result.stdout)} == {1}
    assert "With affinity: anthropic/claude-sonnet-4-20250514 for all 7 turns" in result.stdout


def test_config_option_runs_a_users_providers_with_the_demos_redis(
    simulator: ThreadServer, tmp_path: Path
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(offline(simulator.url, None)))  # memory store in the file
    result = run_demo(demo_env(), "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"providers : from {path}" in result.stdout and "private redis-server" in result.stdout
    assert {s[2] for s in steps(result.stdout)} == {1, 2}  # so the pin crossed replicas
    assert "With affinity: anthropic/claude-sonnet-4-20250514 for all 7 turns" in result.stdout
    assert "stopped the 3 processes" in result.stdout  # redis and two replicas, no simulator


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_demo_stops_everything_it_started(signum: int) -> None:
    env = demo_env()
    # A slow simulator keeps the first turn in flight when the signal arrives.
    with subprocess.Popen(
        [*demo_command(), "--ttft-ms", "5000"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    ) as demo:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:
            seen.append(line)
            if line.startswith("Run 1:"):
                break
        # The demo itself, the simulator and two replicas (and redis-server: see leftovers).
        running = marked(env)
        assert demo.pid in running and len(running) == 4, "".join(seen)
        assert leftovers(env, "".join(seen)) != []
        demo.send_signal(signum)
        rest, _ = demo.communicate(timeout=30)
    assert demo.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest and "stopped the 4 processes" in rest
    assert "killed" not in rest  # a turn still in flight does not hold the stop up
    assert leftovers(env, "".join(seen)) == []

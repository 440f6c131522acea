"""Store failures are loud: a refused password or ACL stops `serve` with a clear message; an
unreachable Redis is a warning, /readyz names the store's state, the gauge follows it, each
change is logged once, and the admin API says 503 when it cannot know."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.configs import CODE, three_models
from tests.support import RedisServer, ThreadServer, free_port, gateway, wait_for
from tests.unit.test_metrics import start_gateway, stop


def serve(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--host", "127.0.0.1",
         "--port", str(free_port())], capture_output=True, text=True, timeout=60)


@pytest.fixture
def guarded_redis() -> Any:
    server = RedisServer().start()
    server.command("ACL", "SETUSER", "gw", "on", ">gw-pass-2", "~*", "+@all", "-zadd")
    try:
        yield server
    finally:
        server.stop()


def test_a_wrong_password_stops_serve_with_a_clear_message(
    simulator: ThreadServer, tmp_path: Path, guarded_redis: RedisServer
) -> None:
    url = f"redis://gw:not-the-pass-9@127.0.0.1:{guarded_redis.port}/0"
    result = serve(three_models(simulator.url, url), tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"config error: routing.session_cache: Redis at 127.0.0.1:{guarded_redis.port} rejected "
        "the gateway's credentials (WRONGPASS invalid username-password pair or user is "
        "disabled.); check the password (and user) in the URL")
    assert "not-the-pass-9" not in result.stderr + result.stdout


def test_a_missing_acl_permission_stops_serve_naming_it(
    simulator: ThreadServer, tmp_path: Path, guarded_redis: RedisServer
) -> None:
    url = f"redis://gw:gw-pass-2@127.0.0.1:{guarded_redis.port}/0"  # gw may not ZADD
    result = serve(three_models(simulator.url, url), tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("config error: routing.session_cache: the Redis user lacks a permission")
    assert "can't run this command" in last and "gw-pass-2" not in result.stderr


def test_an_unreachable_redis_is_a_warning_and_shows_on_readyz(
    simulator: ThreadServer, tmp_path: Path
) -> None:
    port = free_port()
    config = three_models(simulator.url, f"redis://:pw-123@127.0.0.1:{port}/0")
    config["routing"]["session_cache"]["breaker_cooldown_ms"] = 100
    process, url = start_gateway(config, tmp_path)
    redis = RedisServer(port, "--requirepass", "pw-123", password="pw-123")
    try:
        assert httpx.get(f"{url}/readyz").json() == {"status": "ok", "affinity_store": "degraded"}
        assert 'gateway_affinity_store_up{store="redis"} 0.0' in httpx.get(f"{url}/metrics").text
        reply = httpx.post(f"{url}/v1/chat/completions", headers={"X-Model-Affinity": "s1"},
                           json={"messages": [{"role": "user", "content": CODE}]})
        assert (reply.status_code, reply.headers["x-model-affinity-status"]) == (200, "degraded")
        # The admin API: a pin this replica holds is shown and marked; one it does not is a 503.
        held = httpx.get(f"{url}/v1/affinity/s1").json()
        assert (held["source"], held["degraded"]) == ("local_cache", True)
        unknown = httpx.get(f"{url}/v1/affinity/never-seen")
        assert unknown.status_code == 503
        assert unknown.json()["error"]["code"] == "affinity_store_unavailable"

        redis.start()

        def back() -> bool:
            httpx.post(f"{url}/v1/chat/completions", headers={"X-Model-Affinity": "s2"},
                       json={"messages": [{"role": "user", "content": CODE}]})
            return bool(httpx.get(f"{url}/readyz").json() == {"status": "ok", "affinity_store": "up"})

        wait_for(back, timeout=10, message="the store did not come back")
        assert 'gateway_affinity_store_up{store="redis"} 1.0' in httpx.get(f"{url}/metrics").text
        assert httpx.get(f"{url}/v1/affinity/s1").json()["source"] == "redis"
    finally:
        _, err = stop(process)
        redis.stop()
    lines = [line for line in err.splitlines() if "affinity store:" in line]
    assert len(lines) == 2, lines  # down at start, then back: each once
    assert f"Redis at 127.0.0.1:{port} is unreachable at start" in lines[0]
    assert "\"level\":\"warning\"" in lines[0] and "fail-open" in lines[0]
    assert f"Redis at 127.0.0.1:{port} is back after" in lines[1]
    assert "pw-123" not in err


def test_each_change_of_state_is_logged_once(
    simulator: ThreadServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis = RedisServer().start()
    config = three_models(simulator.url, redis.url)
    config["routing"]["session_cache"].update(breaker_cooldown_ms=100, socket_timeout_ms=500)
    try:
        with caplog.at_level("INFO", logger="gateway.affinity"), gateway(config) as replica:
            def turn(session: str) -> str:
                return httpx.post(f"{replica.url}/v1/chat/completions",
                                  headers={"X-Model-Affinity": session},
                                  json={"messages": [{"role": "user", "content": CODE}]},
                                  ).headers["x-model-affinity-status"]

            assert turn("a") == "new"
            redis.kill()
            for number in range(20):
                assert turn(f"down-{number}") == "degraded"
            redis.start()
            wait_for(lambda: turn("b") in ("new", "hit"), timeout=10)
            for number in range(20):
                assert turn(f"up-{number}") == "new"
    finally:
        redis.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.affinity"]
    assert len(messages) == 3, messages
    where = f"affinity store: Redis at 127.0.0.1:{redis.port}"
    assert messages[0] == f"{where} is up"
    assert messages[1].startswith(f"{where} is not answering (ConnectionRefusedError")
    assert messages[2].startswith(f"{where} is back after ")

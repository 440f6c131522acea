"""The command line: check-config output and errors, serve refusing bad set-ups."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.unit.test_config import AFFINITY_DEMO


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "REDIS_URL"}
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          env={**environ, **(env or {})}, timeout=60)


def test_check_config_prints_resolved_config_with_keys_masked(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(AFFINITY_DEMO)
    keys = {"OPENAI_API_KEY": "sk-live-abcdef123456", "ANTHROPIC_API_KEY": "sk-ant-zyxw987654"}
    result = run("check-config", str(path), env=keys)
    assert result.returncode == 0, result.stderr
    assert "model: anthropic/claude-sonnet-4-20250514" in result.stdout
    assert "warning: tracing" in result.stderr
    for key in keys.values():
        assert key not in result.stdout + result.stderr


def test_check_config_takes_the_file_as_serve_does_too(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model_providers: [{model: vllm/m}]\n")
    assert run("check-config", "--config", str(path)).returncode == 0
    neither = run("check-config")
    assert neither.returncode == 2 and "name one config file" in neither.stderr


def test_check_config_fails_with_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(AFFINITY_DEMO)
    result = run("check-config", str(path), env={"ANTHROPIC_API_KEY": "a"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "config error: model_providers[0].access_key: environment variable OPENAI_API_KEY is not set")
    assert "Traceback" not in result.stderr


def test_check_config_refuses_the_redis_urls_serve_would(tmp_path: Path) -> None:
    """Each passed check-config before, then serve refused it or crashed with a traceback."""
    path = tmp_path / "config.yaml"
    cases = {
        "redis://h:99999": "routing.session_cache.url: Port out of range",
        "redis://h:6379?foo=bar": "routing.session_cache.url: the pipelined client does not support",
        "redis+sentinel://h:abc/mymaster": "routing.session_cache.url: invalid literal",
        "rediss://h:6380?ssl_ca_certs=/no/such.pem": "routing.session_cache.url: cannot read",
    }
    for url, message in cases.items():
        path.write_text("model_providers: [{model: vllm/m}]\n"
                        f"routing: {{session_cache: {{url: '{url}'}}}}\n")
        for command in (("check-config", str(path)), ("serve", "--config", str(path))):
            result = run(*command)
            assert result.returncode == 1, (url, command, result.stderr)
            last = result.stderr.strip().splitlines()[-1]
            assert last.startswith(f"config error: {message}"), result.stderr
            assert "Traceback" not in result.stderr


def test_serve_refuses_workers_with_the_memory_store(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model_providers: [{model: vllm/m}]\n")
    result = run("serve", "--config", str(path), "--workers", "2")
    assert result.returncode == 1
    assert "needs the redis store" in result.stderr and "Traceback" not in result.stderr


def test_contradictory_or_unknown_options_are_refused_by_name() -> None:
    both = run("demo", "--config", "config.yaml", "--offline")
    assert both.returncode == 2 and "--offline: not allowed with argument --config" in both.stderr
    loud = run("serve", "--log-level", "loud")
    assert loud.returncode == 2 and "--log-level: invalid choice: 'loud'" in loud.stderr
    assert "Traceback" not in both.stderr + loud.stderr
    wrapped = run("serve", "--port", "70000")  # it listened on 70000 - 65536 while logging 70000
    assert wrapped.returncode == 2 and "--port: a port is 0 to 65535, not 70000" in wrapped.stderr
    none = run("serve", "--workers", "0")
    assert none.returncode == 2 and "--workers: must be at least 1, not 0" in none.stderr

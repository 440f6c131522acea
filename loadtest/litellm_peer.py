"""LiteLLM's proxy as a peer in `make bench` (BENCH_PEERS=litellm): its own virtualenv under
loadtest/results/ at a pinned version, offline settings, one worker, the same fake upstream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from stack import RESULTS, Stack, free_port

LITELLM_VERSION = "1.106.12"  # the version the reference numbers were measured with
VENV = RESULTS / f"litellm-{LITELLM_VERSION}"
# No network: the bundled model cost map, no telemetry, no callbacks, no database.
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "DISABLE_SCHEMA_UPDATE": "True",
}


def litellm_version() -> str:
    return LITELLM_VERSION


def ensure_installed() -> Path:
    """The proxy's executable, installing it into its own virtualenv on first use."""
    executable = VENV / "bin" / "litellm"
    if executable.exists():
        return executable
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {VENV} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet",
                    f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    return executable


def start_litellm(stack: Stack, upstream: str, cpus: str) -> tuple[str, subprocess.Popen[bytes]]:
    executable = ensure_installed()
    config = stack.workdir / "litellm.yaml"
    config.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "bench-model", "litellm_params": {
            "model": "openai/bench-model", "api_base": f"{upstream}/v1", "api_key": "sk-bench"}}],
        "litellm_settings": {"telemetry": False, "drop_params": True},
        # No gateway key, as the gateway runs in the bench (on loopback only).
        "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
    }))
    port = free_port()
    process = stack.spawn("litellm", [
        str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
        "--num_workers", "1"], cpus, OFFLINE_ENV)
    url = f"http://127.0.0.1:{port}"
    stack.wait_http(process, "litellm", f"{url}/health/liveliness", timeout=180)
    return url, process

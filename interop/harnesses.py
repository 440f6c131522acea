"""Running the real CLIs: a scratch directory, a clean environment, one scripted session each.

Each CLI gets a private HOME (and CLAUDE_CONFIG_DIR / CODEX_HOME, XDG dirs, TMPDIR) inside the
scratch directory, an environment built from nothing (no inherited variables, so no credential
of this machine reaches it), read-only tools, and proxies pointing at the egress trap, so it can
talk only to the front on 127.0.0.1. The scratch project is fingerprinted before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

PROMPT = "Which files are in this project, and what does calc.py do? Read them, change nothing."
DUMMY_KEY = "sk-interop-dummy-key"  # the front and the simulator never check it
# The default sub-agent, redefined with read-only tools and no Agent tool of its own: the
# simulator starts one sub-agent per value of the Agent tool's `model` enum, and with the
# built-in definition every sub-agent does the same again (thousands of requests).
_SUBAGENT = json.dumps({"general-purpose": {
    "description": "Reads and searches files to answer a question", "prompt": "You read files.",
    "tools": ["Read", "Glob", "Grep"]}})
_PROJECT = {
    "README.md": "# calc\n\nA tiny calculator library used by the interop run.\n",
    "calc.py": "def add(a: int, b: int) -> int:\n    return a + b\n",
    "notes/todo.txt": "- add subtraction\n",
}


@dataclass(frozen=True)
class Scratch:
    root: Path

    @property
    def project(self) -> Path:
        return self.root / "project"

    def home(self, harness: str) -> Path:
        return self.root / f"home-{harness}"

    @classmethod
    def create(cls, root: Path) -> Scratch:
        scratch = cls(root)
        for name, text in _PROJECT.items():
            path = scratch.project / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return scratch

    def fingerprint(self) -> str:
        """A digest of every path and byte under the project: equal before and after = untouched."""
        digest = hashlib.sha256()
        for path in sorted(self.project.rglob("*")):
            digest.update(str(path.relative_to(self.project)).encode())
            if path.is_file():
                digest.update(path.read_bytes())
        return digest.hexdigest()


@dataclass
class Result:
    harness: str
    returncode: int | None  # None: killed at the deadline
    output: str

    @property
    def session(self) -> str | None:
        """The session id the CLI printed (Claude Code's JSON result, Codex's header line)."""
        found = re.search(r'"session_id":"([^"]+)"|^session id: (\S+)', self.output, re.MULTILINE)
        return (found.group(1) or found.group(2)) if found else None


def base_env(home: Path, trap_url: str) -> dict[str, str]:
    node = shutil.which("node")  # the Codex package starts through a node script
    path = ":".join(dict.fromkeys([*([str(Path(node).parent)] if node else []), "/usr/bin", "/bin"]))
    env = {
        "PATH": path, "HOME": str(home), "TMPDIR": str(home / "tmp"), "LANG": "C.UTF-8",
        "TERM": "dumb", "NO_COLOR": "1", "USER": "interop", "LOGNAME": "interop",
        "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"), "XDG_STATE_HOME": str(home / ".local/state"),
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = trap_url
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def claude_code(bin_dir: Path, scratch: Scratch, front_url: str, trap_url: str,
                timeout: float, agents: bool, suffix: str = "") -> Result:
    name = ("claude-code+agents" if agents else "claude-code") + suffix
    home = scratch.home(name)
    env = base_env(home, trap_url) | {
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": front_url,
        "ANTHROPIC_API_KEY": DUMMY_KEY,
        # No telemetry, error reports, auto-update or other traffic that is not the model's.
        "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
        "DISABLE_BUG_COMMAND": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    # Read-only tools (with `agents`, plus Agent: sub-agents, lanes and side-call models show
    # up); --tools limits what exists, --allowedTools what runs without asking, and dontAsk
    # refuses anything else.
    tools = "Read,Glob,Grep" + (",Agent" if agents else "")
    argv = [str(bin_dir / "claude"), "-p", PROMPT, "--tools", tools, "--allowedTools", tools,
            "--permission-mode", "dontAsk", "--no-session-persistence", "--output-format", "json",
            "--strict-mcp-config"]
    if agents:
        argv += ["--agents", _SUBAGENT]
    return _run(name, argv, env, scratch.project, timeout)


def codex(bin_dir: Path, scratch: Scratch, base_url: str, trap_url: str, label: str,
          timeout: float, model: str | None = None) -> Result:
    home = scratch.home(label)
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(base_url))
    env = base_env(home, trap_url) | {"CODEX_HOME": str(codex_home), "INTEROP_GATEWAY_KEY": DUMMY_KEY}
    argv = [str(bin_dir / "codex"), "exec", "--skip-git-repo-check", "--sandbox", "read-only",
            "--ephemeral", "--color", "never", "-C", str(scratch.project)]
    if model is not None:
        argv += ["--model", model]
    argv.append(PROMPT)
    return _run(label, argv, env, scratch.project, timeout)


def codex_config(base_url: str) -> str:
    return f"""model_provider = "gateway"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[history]
persistence = "none"

# Plugin marketplace sync (github.com) and ChatGPT apps/remote plugins (chatgpt.com): off,
# traffic that is not the model's.
[features]
plugins = false
remote_plugin = false
apps = false

[model_providers.gateway]
name = "Affinity Gateway (interop)"
base_url = "{base_url}"
wire_api = "responses"
env_key = "INTEROP_GATEWAY_KEY"
request_max_retries = 0
stream_max_retries = 0
"""


def _run(harness: str, argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Result:
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        return Result(harness, process.returncode, output.decode("utf-8", "replace"))
    except subprocess.TimeoutExpired:
        return Result(harness, None, _kill(process))
    except BaseException:
        _kill(process)  # Ctrl-C: the CLI and anything it started go too
        raise


def _kill(process: subprocess.Popen[bytes]) -> str:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    output, _ = process.communicate()
    return output.decode("utf-8", "replace")

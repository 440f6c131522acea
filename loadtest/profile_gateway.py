"""Profile one gateway worker under bench load with py-spy (not a dependency: install it
into the venv yourself, `pip install py-spy`).

Same set-up as `make bench` (server core / load core, canned upstream, private Redis), then
16 connections of pinned (PROFILE_MODE=on, default), unpinned (off), streamed (stream) or
Responses API requests translated to chat (responses: the bench's row; coder: the same model
over chat, to set beside it) while py-spy samples the worker. Writes a flame graph and the
collapsed stacks under loadtest/results/ and prints the hottest functions by self and by
inclusive time.

    .venv/bin/python loadtest/profile_gateway.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CODER_CHAT, CODER_RESPONSES
from stack import RESULTS, Stack, exit_on_sigterm, free_port, gateway_config

HERE = Path(__file__).resolve().parent
TOP = 25


def area(frame_file: str) -> str:
    """Who does the work in a frame: a library, or a gateway module."""
    frame_file = "/" + frame_file.lstrip("/")  # py-spy shortens site-packages paths
    if "/gateway/" in frame_file:
        return "gateway/" + frame_file.split("/gateway/", 1)[1]
    for library in ("redis", "aiohttp", "prometheus_client", "starlette", "uvicorn", "asyncio",
                    "multidict", "yarl", "httptools", "contextlib", "uuid"):
        if f"/{library}/" in frame_file:
            return library
    return frame_file.rsplit("/", 1)[-1]


def by_area(collapsed: Path) -> Counter[str]:
    """Samples by the area of their innermost frame: where the CPU time is actually spent."""
    areas: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        areas[area(leaf.split(" (")[-1].rstrip(")").rsplit(":", 1)[0])] += int(count)
    return areas


def summarise(collapsed: Path) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " " + f.split(" (")[-1].rstrip(")").rsplit(":", 1)[0]
                  for f in stack.split(";") if f]
        samples = int(count)
        total += samples
        if frames:
            own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples", "", "self %  area (innermost frame)"]
    lines += [f"{100 * n / total:6.1f}  {a}" for a, n in by_area(collapsed).most_common(TOP)]
    lines += ["", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in own.most_common(TOP)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in inclusive.most_common(TOP * 2)]
    return "\n".join(lines)


def main() -> int:
    exit_on_sigterm()
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if spy is None:
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1
    mode = os.environ.get("PROFILE_MODE", "on")
    seconds = os.environ.get("PROFILE_SECONDS", "10")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agw-profile-") as tmp, Stack(Path(tmp)) as stack:
        port = free_port()
        up = stack.spawn("upstream", [sys.executable, str(HERE / "upstream.py"), "--port",
                                      str(port)], "1")
        stack.wait_tcp(up, "upstream", port)
        upstream = f"http://127.0.0.1:{port}"
        redis_port, _ = stack.redis("1")
        config = gateway_config(upstream, f"redis://127.0.0.1:{redis_port}/0",
                                ("bench-model", "bench-large", "bench-coder"))
        url, gateway = stack.gateway("gateway", config, "0")
        load = [sys.executable, str(HERE / "loadgen.py"), "--url", f"{url}/v1/chat/completions",
                "--connections", "16"]
        if mode == "responses":
            load = [sys.executable, str(HERE / "loadgen.py"), "--url", f"{url}/v1/responses",
                    "--connections", "16", "--body", orjson.dumps(CODER_RESPONSES).decode()]
        elif mode == "coder":  # the same model over chat completions, to set beside it
            load += ["--body", orjson.dumps(CODER_CHAT).decode()]
        if mode in ("on", "stream"):
            load += ["--affinity", "1000"]
            subprocess.run(["taskset", "-c", "1", *load, "--requests-per-connection", "63",
                            "--duration", "60"], check=True, capture_output=True)
        if mode == "stream":
            load.append("--stream")
        loader = subprocess.Popen(["taskset", "-c", "1", *load, "--duration",
                                   str(float(seconds) + 3)], stdout=subprocess.PIPE)
        out = RESULTS / f"profile-{mode}"
        subprocess.run([spy, "record", "-p", str(gateway.pid), "-d", seconds, "-r", "250",
                        "--nonblocking", "-f", "raw", "-o", f"{out}.txt"], check=True,
                       capture_output=True)
        subprocess.run([spy, "record", "-p", str(gateway.pid), "-d", "2", "-r", "250",
                        "--nonblocking", "-o", f"{out}.svg"], check=False, capture_output=True)
        print(loader.communicate()[0].decode().strip())
    report = summarise(Path(f"{out}.txt"))
    Path(f"{out}-top.txt").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

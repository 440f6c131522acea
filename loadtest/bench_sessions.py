"""`make bench-sessions`: the CPU the session-source resolution (gateway/sessions.py) costs
per request, against what the request path paid for the session before it (one header look-up
and the id check). Target (issue 16): at most 5 us added per request.

Each case is a request as the clients send it (headers in the order and number a real SDK
sends them), scanned and resolved N times in one process; the coroutine is driven by hand,
as the pipeline's `await` does, without an event loop's overhead in the figure.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.affinity import validate_affinity_id
from gateway.apis import CHAT, MESSAGES
from gateway.config import parse_config
from gateway.http import header
from gateway.sessions import Sessions

ROUNDS = 5
CALLS = 20_000
SDK_HEADERS = [
    (b"host", b"127.0.0.1:12000"), (b"accept-encoding", b"gzip, deflate"), (b"connection", b"keep-alive"),
    (b"accept", b"application/json"), (b"content-type", b"application/json"),
    (b"user-agent", b"Anthropic/Python 0.69.0"), (b"x-stainless-lang", b"python"),
    (b"x-stainless-package-version", b"0.69.0"), (b"x-stainless-os", b"Linux"),
    (b"x-stainless-arch", b"x64"), (b"x-stainless-runtime", b"CPython"),
    (b"x-stainless-runtime-version", b"3.12.3"), (b"authorization", b"Bearer sk-gw"),
    (b"x-stainless-retry-count", b"0"), (b"x-stainless-read-timeout", b"600"),
    (b"content-length", b"1432"),
]
SESSION = b"2f5e6a1c-0d4b-4f59-9d7e-7f1b3c2a9e10"
MESSAGES_BODY = {"model": "claude-sonnet-4-5-20250929", "max_tokens": 32000,
                 "system": [{"type": "text", "text": "You are Claude Code." * 50}],
                 "messages": [{"role": "user", "content": "fix the failing test"}] * 3,
                 "tools": [{"name": f"tool{i}", "input_schema": {}} for i in range(15)]}
CHAT_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


def drive(coroutine: Any) -> Any:
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the resolution awaited something")


def per_call_us(work: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(CALLS):
            work()
        best = min(best, time.process_time() - started)
    return best / CALLS * 1e6


def main() -> int:
    config = parse_config({"model_providers": [{"model": "anthropic/*", "access_key": "k"},
                                               {"model": "openai/gpt-4o", "access_key": "k"}]}, environ={})
    implicit = parse_config({"model_providers": [{"model": "openai/gpt-4o", "access_key": "k"}],
                             "routing": {"implicit_affinity": True}}, environ={})
    sessions, fingerprints = Sessions(config), Sessions(implicit)
    claude_code = [*SDK_HEADERS, (b"x-claude-code-session-id", SESSION),
                   (b"anthropic-version", b"2023-06-01"),
                   (b"anthropic-beta", b"claude-code-20250219,interleaved-thinking-2025-05-14")]
    metadata_body = {**MESSAGES_BODY, "metadata": {"user_id": json.dumps({"session_id": SESSION.decode()})}}
    cases: list[tuple[str, Sessions, list[tuple[bytes, bytes]], Any, dict[str, Any]]] = [
        ("explicit X-Model-Affinity", sessions, [*SDK_HEADERS, (b"x-model-affinity", b"session-42")], CHAT,
         CHAT_BODY),
        ("Claude Code header (+ beta headers)", sessions, claude_code, MESSAGES, MESSAGES_BODY),
        ("metadata.user_id JSON only", sessions, SDK_HEADERS, MESSAGES, metadata_body),
        ("no session (every source missed)", sessions, SDK_HEADERS, CHAT, CHAT_BODY),
        ("implicit fingerprint", fingerprints, SDK_HEADERS, MESSAGES, MESSAGES_BODY),
    ]
    before_scope = {"headers": [*SDK_HEADERS, (b"x-model-affinity", b"session-42")]}

    def before() -> None:  # what prepare() paid before sessions.py
        raw = header(before_scope, b"x-model-affinity")
        if raw is not None:
            validate_affinity_id(raw)

    baseline = per_call_us(before)
    rows = [f"| before (header look-up + id check) | {baseline:.2f} | - |"]
    for name, resolver, headers, api, body in cases:
        scope = {"headers": headers}
        request = api.parse(orjson.dumps(body), 10_000)

        def work(
            resolver: Sessions = resolver, scope: dict[str, Any] = scope, request: Any = request
        ) -> None:
            drive(resolver.find(resolver.scan(scope), request, "tenant"))

        cost = per_call_us(work)
        rows.append(f"| {name} | {cost:.2f} | {cost - baseline:+.2f} |")
    print("| case | us per request (CPU) | added vs before |\n|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

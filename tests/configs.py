"""Config mappings for end-to-end tests: three models served by one simulator."""

from __future__ import annotations

from typing import Any

CODE = "Write a Python function that parses a CSV file and generates boilerplate code for it"
REASON = "Explain step by step with detailed multi-step analysis why the plan failed"


def three_models(upstream: str, redis_url: str | None = None, **routing: Any) -> dict[str, Any]:
    # A generous socket timeout: a loaded CI machine must not trip the fail-open path by accident.
    session_cache = (
        {"type": "redis", "url": redis_url, "socket_timeout_ms": 2000} if redis_url else {"type": "memory"}
    )
    return {
        "version": "v0.4.0",
        "model_providers": [
            {"model": "openai/gpt-4o-mini", "base_url": upstream, "access_key": "sk-provider-secret-1",
             "default": True},
            {"model": "openai/gpt-4o", "base_url": upstream, "access_key": "sk-provider-secret-1"},
            {"model": "vllm/coder", "base_url": f"{upstream}/v1"},
        ],
        "routing_preferences": [
            {"name": "code_generation",
             "description": "generating new code, writing functions, or creating boilerplate",
             "models": ["vllm/coder", "openai/gpt-4o"]},
            {"name": "complex_reasoning",
             "description": "complex reasoning tasks, multi-step analysis, or detailed explanations",
             "models": ["openai/gpt-4o"]},
        ],
        "model_aliases": {"fast": {"target": "gpt-4o-mini"}},
        "routing": {"session_cache": session_cache, **routing},
        "upstream": {"max_retries": 0},
    }

"""OpenAI Chat Completions upstreams: requests pass through with the model id swapped in."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.config import ModelProvider


def request_headers(provider: ModelProvider) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if provider.access_key:
        headers["authorization"] = f"Bearer {provider.access_key}"
    return headers


def chat_request_body(payload: dict[str, Any], raw: bytes, model_id: str) -> bytes:
    """The client's own bytes when the model already matches; re-encoded only when it must change."""
    if payload.get("model") == model_id:
        return raw
    payload = {**payload, "model": model_id}
    return orjson.dumps(payload)

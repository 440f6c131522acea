"""Error bodies translated between the OpenAI envelope and Anthropic's error shape.

Anthropic: ``{"type": "error", "error": {"type": "rate_limit_error", "message": "..."}}``.
OpenAI: ``{"error": {"message": "...", "type": "...", "param": null, "code": null}}``.
The upstream's message is kept verbatim: it is what tells the user what went wrong.
"""

from __future__ import annotations

from typing import Any

import orjson

# Status -> Anthropic error type, as documented at docs.anthropic.com/en/api/errors (and
# 402/504 as the anthropic SDK's error objects name them).
_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# Anthropic error type -> OpenAI error type (the names gateway/errors.py uses too).
_OPENAI_TYPES: dict[str, str] = {
    "invalid_request_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication_error": "authentication_error",
    "billing_error": "insufficient_quota",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "timeout_error": "timeout_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
}

_MAX_RAW_MESSAGE = 200


def anthropic_error_type(status: int) -> str:
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    # The documented fallback: other 4xx are invalid requests; anything else is Anthropic's.
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}


def openai_error_from_anthropic(status: int, body: bytes) -> dict[str, Any]:
    """An Anthropic error response (status, raw body) -> the OpenAI error envelope."""
    parsed = _loads(body)
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = error.get("type")
        if not isinstance(kind, str):
            kind = anthropic_error_type(status)
        message = error["message"]
    else:
        kind = anthropic_error_type(status)
        message = _raw_message(status, body)
    return openai_error_envelope(kind, message)


def openai_error_envelope(anthropic_type: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _OPENAI_TYPES.get(anthropic_type, "server_error"),
            "param": None,
            "code": anthropic_type,
        }
    }


def anthropic_error_from_openai(status: int, body: bytes) -> dict[str, Any]:
    """An OpenAI-compatible error response (status, raw body) -> Anthropic's error shape."""
    return anthropic_error_body(status, openai_error_message(body) or _raw_message(status, body))


def openai_error_message(body: bytes | dict[str, Any]) -> str | None:
    """The message in an OpenAI-style error, in the shapes compatible servers really send."""
    parsed = _loads(body) if isinstance(body, bytes) else body
    if not isinstance(parsed, dict):
        return None
    error = parsed.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message: str = error["message"]
        return message
    if isinstance(error, str):  # Ollama and some proxies: {"error": "..."}
        return error
    for key in ("message", "detail"):  # {"message": ...}; FastAPI servers: {"detail": ...}
        value = parsed.get(key)
        if isinstance(value, str):
            return value
    return None


def anthropic_stream_error(error: Any) -> dict[str, Any]:
    """The ``error`` member of an OpenAI stream chunk -> an Anthropic ``error`` event body."""
    message = openai_error_message({"error": error}) or "upstream error"
    status = error.get("code") if isinstance(error, dict) else None
    if not isinstance(status, int):
        status = 500
    return anthropic_error_body(status, message)


def openai_stream_error(event: Any) -> dict[str, Any]:
    """An Anthropic ``error`` event body -> the OpenAI envelope sent as a final stream chunk."""
    error = event.get("error") if isinstance(event, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = error.get("type")
        message: str = error["message"]
        return openai_error_envelope(kind if isinstance(kind, str) else "api_error", message)
    return openai_error_envelope("api_error", "upstream stream error")


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _raw_message(status: int, body: bytes) -> str:
    # A body that is not JSON came from something in front of the API (a proxy, a load
    # balancer); short plain text is still worth showing, an HTML error page is not.
    text = body.decode("utf-8", "replace").strip()
    if text and len(text) <= _MAX_RAW_MESSAGE and not text.startswith("<"):
        return f"upstream returned HTTP {status}: {text}"
    return f"upstream returned HTTP {status}"

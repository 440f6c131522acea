"""API shapes: how a request in the client's API becomes one in the provider's, and back.

An `Exchange` is chosen per (client API, provider interface) pair; same-API pairs pass bytes
through, the others translate (Anthropic Messages <-> OpenAI Chat Completions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gateway.config import ModelProvider
from gateway.providers import openai

ClientApi = Literal["openai", "anthropic"]


class StreamTranslator(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...

    @property
    def usage(self) -> dict[str, int] | None: ...


@dataclass(frozen=True, slots=True)
class Exchange:
    path: str  # appended to the provider's api_base
    headers: Callable[[ModelProvider], dict[str, str]]
    request_body: Callable[[dict[str, Any], bytes, str], bytes]  # (payload, raw, model_id)
    response_body: Callable[[bytes, str], bytes] | None  # None: pass the provider's bytes through
    stream: Callable[[str, bool], StreamTranslator]  # (model, include_usage)


def _passthrough_stream(model: str, include_usage: bool) -> StreamTranslator:
    return openai.UsageScanner()


EXCHANGES: dict[tuple[ClientApi, str], Exchange] = {
    ("openai", "openai"): Exchange(
        path="/chat/completions",
        headers=openai.request_headers,
        request_body=openai.chat_request_body,
        response_body=None,
        stream=_passthrough_stream,
    ),
}


def exchange_for(client_api: ClientApi, interface: str) -> Exchange:
    return EXCHANGES[(client_api, interface)]

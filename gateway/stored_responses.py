"""GET / DELETE /v1/responses/{id} and GET /v1/responses/{id}/input_items: stored responses,
each visible to its own tenant only (another tenant's id is not found).

A response a native provider produced is stored there too (OpenAI keeps it 30 days): a
DELETE removes it at that provider first, and the gateway's copy only once the provider has
(or says it never had it), so a failed delete can be retried and nothing is left behind."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson

from gateway.affinity.responses import ResponseStore
from gateway.auth import Authenticator
from gateway.config import Config
from gateway.dispatch import passed_headers
from gateway.errors import BadRequest, GatewayError, MethodNotAllowed, NotFound, UpstreamStatusError
from gateway.http import respond
from gateway.metrics import Metrics
from gateway.providers import openai
from gateway.types import Receive, Scope, Send
from gateway.upstream import UpstreamClient

INPUT_ITEMS = "/input_items"
MAX_LIMIT = 100


class StoredResponses:
    def __init__(self, store: ResponseStore, auth: Authenticator, metrics: Metrics,
                 config: Config, upstream: UpstreamClient) -> None:
        self.store = store
        self.auth = auth
        self.metrics = metrics
        self.config = config
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 200
        headers: list[tuple[bytes, bytes]] = []
        try:
            body = await self._answer(scope)
        except GatewayError as error:
            status = error.status
            body = error.body()
            headers = error.header_pairs()  # a provider's or the pool's Retry-After
        # apart from POST /v1/responses: a stored read is not a completion's latency
        self.metrics.request("stored_responses", "", status, time.perf_counter() - started)
        await respond(send, status, body, headers)

    async def _answer(self, scope: Scope) -> bytes:
        tenant = self.auth.tenant(scope)
        response_id: str = scope["path_params"]["response_id"]
        listing = response_id.endswith(INPUT_ITEMS)
        if listing:
            response_id = response_id[: -len(INPUT_ITEMS)]
        if not response_id or "/" in response_id or len(response_id) > 256:
            raise NotFound(f"no response {response_id!r}", param="response_id", code="not_found")
        method = scope["method"]
        if listing and method != "GET":
            raise MethodNotAllowed("Method Not Allowed", code="method_not_allowed")
        record = await self.store.get(tenant, response_id)
        if record is None:
            raise _missing(response_id)
        if method == "DELETE":
            if record.get("native"):
                await self._delete_at_provider(record, response_id)
            if not await self.store.delete(tenant, response_id):
                raise _missing(response_id)  # deleted by another request meanwhile
            return orjson.dumps({"id": response_id, "object": "response.deleted", "deleted": True})
        if not listing:
            return orjson.dumps(record["response"])
        return orjson.dumps(_page(record["input"], scope))


    async def _delete_at_provider(self, record: dict[str, Any], response_id: str) -> None:
        model = record.get("model")
        provider = self.config.resolve(model) if isinstance(model, str) else None
        if provider is None:
            return  # no longer configured: nowhere to send it, and nothing the gateway can do
        url = f"{provider.api_base}/responses/{quote(response_id, safe='')}"
        response = await self.upstream.request("DELETE", url, openai.request_headers(provider))
        async with response:
            status = response.status
        if status >= 300 and status != 404:  # 404: the provider no longer holds it either
            # A rate limit or an outage keeps its status and its Retry-After: the client waits.
            raise UpstreamStatusError(
                status if status in (429, 503) else 502,
                f"provider {provider.model} answered {status} to deleting response {response_id!r}; "
                "the gateway kept its copy, so the delete can be retried",
                reason="delete_failed", code="upstream_delete_failed",
                headers=passed_headers(status, response.headers),
            )


def _missing(response_id: str) -> NotFound:
    return NotFound(f"response {response_id!r} was not found (unknown, expired or deleted)",
                    param="response_id", code="not_found")


def _page(items: list[dict[str, Any]], scope: Scope) -> dict[str, Any]:
    """OpenAI's list shape: `order` (desc by default), `limit` (20, at most 100), `after`."""
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("order: must be asc or desc", param="order", code="invalid_value")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise BadRequest("limit: must be an integer", param="limit", code="invalid_type") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit: must be between 1 and {MAX_LIMIT}", param="limit", code="invalid_value")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item.get("id") for item in ordered]
        ordered = ordered[ids.index(after) + 1:] if after in ids else []
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(ordered) > limit,
    }

"""The HTTP surface: thin raw-ASGI endpoints over the pipeline and the stores."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qsl

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE

from gateway.affinity import AffinityStore, pin_key, validate_affinity_id
from gateway.apis import ClientApi
from gateway.auth import Authenticator
from gateway.config import Config
from gateway.errors import GatewayError, NotFound, StoreUnavailable
from gateway.http import header, respond
from gateway.pipeline import Pipeline
from gateway.types import Receive, Scope, Send


class Completions:
    """POST /v1/chat/completions, /v1/messages: a completion in the client's API."""

    def __init__(self, pipeline: Pipeline, api: ClientApi) -> None:
        self.pipeline = pipeline
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.pipeline.complete(scope, receive, send, self.api)


class RoutingDecision:
    """POST /routing/v1/chat/completions, /routing/v1/messages: the decision only."""

    def __init__(self, pipeline: Pipeline, api: ClientApi) -> None:
        self.pipeline = pipeline
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.pipeline.decision(scope, receive, send, self.api)


class Models:
    """GET /v1/models: configured models and aliases in OpenAI's list shape."""

    def __init__(self, config: Config) -> None:
        created = int(time.time())
        data = [
            {"id": p.model, "object": "model", "created": created, "owned_by": p.provider}
            for p in config.providers
        ]
        data += [
            {"id": alias, "object": "model", "created": created, "owned_by": "alias",
             "target": target}
            for alias, target in config.aliases.items()
        ]
        self.body = orjson.dumps({"object": "list", "data": data})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, self.body, [])


class AffinityAdmin:
    """GET / DELETE /v1/affinity/{id}: inspect or drop a pin (admin key when auth is on)."""

    def __init__(self, store: AffinityStore, auth: Authenticator) -> None:
        self.store = store
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if self.auth.enabled:
                self.auth.require_admin(scope)
            affinity_id = validate_affinity_id(scope["path_params"]["affinity_id"], "affinity_id")
            tenant = self._tenant(scope)
            key = pin_key(tenant, affinity_id)
            if scope["method"] == "DELETE":
                removal = await self.store.delete(key)
                if removal.degraded:  # the pin lives on in Redis: saying "deleted" would be false
                    raise StoreUnavailable(
                        "the affinity store is unreachable: the pin was dropped from this "
                        "replica's cache only; retry when it is back", code="affinity_store_unavailable")
                if not removal.found:
                    raise NotFound(f"no pin for {affinity_id!r}", code="pin_not_found")
                body = {"id": affinity_id, "tenant": tenant, "deleted": True}
            else:
                lookup = await self.store.get(key)
                if lookup.pin is None:
                    raise NotFound(f"no pin for {affinity_id!r}", code="pin_not_found")
                body = {"id": affinity_id, "tenant": tenant, "model": lookup.pin.model,
                        "route": lookup.pin.route, "degraded": lookup.degraded}
        except GatewayError as error:
            await respond(send, error.status, error.body(), [])
            return
        await respond(send, 200, orjson.dumps(body), [])

    def _tenant(self, scope: Scope) -> str:
        """An admin names the tenant whose pin it means (`?tenant=`), else as a client would."""
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        return query.get("tenant") or self.auth.header_tenant(scope)


class Health:
    """GET /healthz (alive) and /readyz (config loaded, stores open, not draining)."""

    def __init__(self, state: dict[str, bool], key: str) -> None:
        self.state = state
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ok = self.state.get(self.key, False)
        body = b'{"status":"ok"}' if ok else b'{"status":"unavailable"}'
        await respond(send, 200 if ok else 503, body, [])


class Document:
    """A fixed JSON document (GET /openapi.json)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, self.body, [])


class MetricsEndpoint:
    """GET /metrics; in OpenMetrics (which carries exemplars) when a scraper asks for it and
    `render_openmetrics` is given (tracing is on)."""

    def __init__(
        self, render: Callable[[], bytes], render_openmetrics: Callable[[], bytes] | None = None
    ) -> None:
        self.render = render
        self.render_openmetrics = render_openmetrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.render_openmetrics is not None and "application/openmetrics-text" in (
            header(scope, b"accept") or ""
        ):
            body = self.render_openmetrics()
            await respond(send, 200, body, [], content_type=OPENMETRICS_TYPE.encode())
            return
        body = self.render()
        await respond(send, 200, body, [], content_type=CONTENT_TYPE_LATEST.encode())


class Reachable:
    """HEAD / (and GET /): a reachability probe, as agent harnesses send before they start."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b'{"status":"ok"}', [])

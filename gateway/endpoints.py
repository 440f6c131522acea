"""The HTTP surface: thin raw-ASGI endpoints over the pipeline and the stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE

from gateway.affinity import AffinityStore, pin_key, validate_affinity_id
from gateway.affinity.lanes import LaneIndex
from gateway.apis import COUNT_TOKENS, ClientApi
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


class CountTokens:
    """POST /v1/messages/count_tokens: counted by the model the request would be served by
    when that is an Anthropic model, else estimated (and the response says so)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.pipeline.complete(scope, receive, send, COUNT_TOKENS)


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
        # A wildcard is listed as itself: what it serves is whatever its provider has.
        data += [
            {"id": w.model, "object": "model", "created": created, "owned_by": w.provider,
             "wildcard": True, "model_prefixes": list(w.model_prefixes)}
            for w in config.wildcards
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
    """GET / DELETE /v1/affinity/{id}: inspect or drop a session's pins, one per lane (admin
    key when auth is on). `?lane=model:<name>` or `?lane=agent:<id>` picks one lane; without
    it, every lane the store lists for the session (with Redis: whichever replica pinned it),
    those this replica has seen, and one per configured model name."""

    def __init__(
        self, store: AffinityStore, auth: Authenticator, lanes: LaneIndex, config: Config
    ) -> None:
        self.store = store
        self.auth = auth
        self.lanes = lanes
        names = ["", *config.models, *config.aliases]
        self.model_lanes = tuple(f"model:{name}" for name in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if self.auth.enabled:
                self.auth.require_admin(scope)
            affinity_id = validate_affinity_id(scope["path_params"]["affinity_id"], "affinity_id")
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            tenant = query.get("tenant") or self.auth.header_tenant(scope)
            lanes = [query["lane"]] if query.get("lane") else await self._lanes(tenant, affinity_id)
            if scope["method"] == "DELETE":
                body = await self._delete(tenant, affinity_id, lanes)
                if not query.get("lane"):
                    self.lanes.forget(tenant, affinity_id)
                    await self.store.forget_lanes(pin_key(tenant, affinity_id))
            else:
                body = await self._get(tenant, affinity_id, lanes)
        except GatewayError as error:
            await respond(send, error.status, error.body(), error.header_pairs())
            return
        await respond(send, 200, orjson.dumps(body), [])

    async def _lanes(self, tenant: str, affinity_id: str) -> list[str]:
        shared = await self.store.lanes(pin_key(tenant, affinity_id)) or []
        # dict: one of each, in order (the lane pinned first: a harness's main loop)
        ordered = dict.fromkeys([*shared, *self.lanes.lanes(tenant, affinity_id), *self.model_lanes])
        return list(ordered)

    async def _get(self, tenant: str, affinity_id: str, lanes: list[str]) -> dict[str, Any]:
        found = []
        unknowable = False  # a lane this replica holds no copy of while Redis is down
        # At once: the pipelined client sends them in one round trip (a lane per configured model).
        lookups = await asyncio.gather(
            *(self.store.get(pin_key(tenant, affinity_id, lane), touch=False) for lane in lanes))
        for lane, lookup in zip(lanes, lookups, strict=True):
            if lookup.pin is not None:
                found.append({"lane": lane, "model": lookup.pin.model, "route": lookup.pin.route,
                              "degraded": lookup.degraded,
                              "source": "local_cache" if lookup.degraded else self.store.name})
            unknowable = unknowable or (lookup.degraded and lookup.pin is None)
        if not found and unknowable:  # not here, and Redis cannot say
            raise StoreUnavailable(
                "the affinity store is unreachable and this replica holds no copy of the pin: "
                "it cannot tell; retry when it is back", code="affinity_store_unavailable")
        if not found:
            raise NotFound(f"no pin for {affinity_id!r}", code="pin_not_found")
        first = found[0]  # the lane seen first: a harness's main loop
        return {"id": affinity_id, "tenant": tenant, "model": first["model"], "route": first["route"],
                "source": first["source"], "degraded": any(lane["degraded"] for lane in found),
                "lanes": found}

    async def _delete(self, tenant: str, affinity_id: str, lanes: list[str]) -> dict[str, Any]:
        deleted = []
        removals = await asyncio.gather(
            *(self.store.delete(pin_key(tenant, affinity_id, lane)) for lane in lanes))
        for lane, removal in zip(lanes, removals, strict=True):
            if removal.degraded:  # the pin lives on in Redis: saying "deleted" would be false
                raise StoreUnavailable(
                    "the affinity store is unreachable: the pin was dropped from this "
                    "replica's cache only; retry when it is back", code="affinity_store_unavailable")
            if removal.found:
                deleted.append(lane)
        if not deleted:
            raise NotFound(f"no pin for {affinity_id!r}", code="pin_not_found")
        return {"id": affinity_id, "tenant": tenant, "deleted": True, "lanes": deleted}


class Health:
    """GET /healthz (alive) and /readyz (config loaded, stores open, not draining). /readyz
    stays 200 while the affinity store is degraded (the gateway fails open) and says so."""

    def __init__(self, state: dict[str, bool], key: str, store: AffinityStore | None = None) -> None:
        self.state = state
        self.key = key
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ok = self.state.get(self.key, False)
        body: dict[str, str] = {"status": "ok" if ok else "unavailable"}
        if self.store is not None:
            body["affinity_store"] = self.store.state
        await respond(send, 200 if ok else 503, orjson.dumps(body), [])


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

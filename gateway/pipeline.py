"""One request's path, in order: admit (header size, key, tenant), read and parse the body,
plan (pin lookup, route on a miss, pin), run the attempt loop, respond. The steps live in
their own modules; their order lives here. Metrics and the access line are written before
the response's last byte, so a scrape right after a request sees it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import orjson

from gateway.apis import ClientApi, StreamTranslator
from gateway.apis.base import UNREADABLE_ANSWER
from gateway.auth import Authenticator
from gateway.config import Config
from gateway.context import RequestContext
from gateway.decider import Decider, Plan
from gateway.dispatch import Dispatcher, Served
from gateway.errors import BadGateway, GatewayError, ServiceUnavailable
from gateway.http import DisconnectWatch, header, read_body, respond, wait_for_disconnect
from gateway.limits import TenantConcurrency, check_header_size
from gateway.logs import AccessLog, short_hash
from gateway.metrics import Metrics
from gateway.sessions import Sessions
from gateway.tracing import Tracer
from gateway.types import Headers, Receive, Scope, Send
from gateway.usage import usage_of

logger = logging.getLogger("gateway.pipeline")


def request_id(scope: Scope) -> str:
    given = header(scope, b"x-request-id")
    if given and len(given) <= 128 and given.isprintable():
        return given
    return os.urandom(16).hex()  # 128 random bits like uuid4().hex, at less than half the cost


def shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable("the gateway is shutting down; retry", reason="shutdown",
                              code="shutting_down", headers={"retry-after": "1"})


def closing_event(translator: StreamTranslator, api: ClientApi, error: GatewayError) -> bytes:
    """The last event of a stream that fails: the translator's, when it numbers its events."""
    fail = getattr(translator, "fail_with", None)
    return bytes(fail(error)) if fail is not None else api.stream_error(error)


def decision_headers(rid: str, plan: Plan | None, model: str | None) -> Headers:
    headers = [(b"x-request-id", rid.encode())]
    if plan is not None and plan.rerouted_from is not None:
        headers.append((b"x-gateway-rerouted-from", plan.rerouted_from.encode()))
    if plan is not None:
        headers += [
            (b"x-model-affinity-status", plan.status.encode()),
            (b"x-model-affinity-source", plan.source.encode()),
            (b"x-gateway-model", (model or plan.decision.model).encode()),
            (b"x-gateway-route", (plan.decision.route or "").encode()),
        ]
    return headers


class Pipeline:
    def __init__(
        self, config: Config, auth: Authenticator, decider: Decider, dispatcher: Dispatcher,
        metrics: Metrics, sessions: Sessions, tracer: Tracer | None = None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.tracer = tracer
        self.auth = auth
        self.decider = decider
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.access = AccessLog(config.logging.format)
        self.concurrency = TenantConcurrency(config.limits.max_concurrent_per_tenant)

    def admit(self, scope: Scope) -> str:
        """Checks that need no body: header size, then the key; returns the tenant."""
        check_header_size(scope, self.config.limits.max_header_bytes)
        return self.auth.tenant(scope)

    async def prepare(self, ctx: RequestContext, receive: Receive, tenant: str, *, pin: bool = True) -> Plan:
        body = await read_body(ctx.scope, receive, self.config.limits.max_body_bytes)
        ctx.request = ctx.api.parse(body, self.config.limits.max_messages)
        if ctx.api.load is not None:  # what the request continues (a stored Responses conversation)
            ctx.request = await ctx.api.load(ctx.request, tenant)
        ctx.seen = self.sessions.scan(ctx.scope)
        session = self.sessions.find(ctx.seen, ctx.request, tenant)
        ctx.plan = await self.decider.plan(ctx.request, session, tenant, pin=pin)
        return ctx.plan

    async def complete(self, scope: Scope, receive: Receive, send: Send, api: ClientApi) -> None:
        """A completion in the client's API, streamed or whole."""
        ctx = RequestContext(scope, api, api.endpoint, request_id(scope))
        self.metrics.started()
        try:
            tenant = self.admit(scope)
            self.concurrency.acquire(tenant)
            ctx.tenant = tenant
            plan = await self.prepare(ctx, receive, tenant, pin=api.estimate is None)
            assert ctx.request is not None
            if api.estimate is not None:  # count_tokens: the planned model's own count, or an estimate
                plan = ctx.plan = plan.first_only()
                provider = self.config.resolve(plan.decision.model)
                if provider is None or provider.interface not in api.exchanges:
                    await self._estimate(ctx, api.estimate(ctx.request), send)
                    return
            ctx.watch = DisconnectWatch(receive)  # a client that leaves ends the upstream wait and read
            ctx.served, ctx.plan = await self.dispatcher.run(ctx.request, plan, api, ctx.forward)
            if ctx.request.stream:
                ctx.watch.stop()  # the stream watches for itself
                await self._stream(ctx, ctx.served, send, receive)
            else:
                await self._whole(ctx, ctx.served, send)
        except asyncio.CancelledError:
            left = ctx.watch is not None and ctx.watch.left
            if not left and ctx.responding:
                raise  # a stream ends itself in-band (`_stream`)
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if ctx.served is not None:
                ctx.served.response.close()  # dropped: nobody will read it
            if left:
                ctx.status = 499  # the client left: nobody to answer
            else:
                # The server is stopping past its drain time: answered in the API's envelope,
                # not by uvicorn's plain 500 and a traceback.
                error = shutting_down()
                ctx.status = error.status
                self._record(ctx)
                await respond(send, error.status, api.error_body(error),
                              decision_headers(ctx.request_id, ctx.plan, ctx.model) + error.header_pairs())
        except GatewayError as error:
            ctx.stop_watching()
            ctx.status = error.status
            self._record(ctx)
            await respond(send, ctx.status, api.error_body(error),
                          decision_headers(ctx.request_id, ctx.plan, ctx.model) + error.header_pairs())
        except Exception:
            # A bug, not a request problem: log it, answer in the API's envelope if still possible.
            ctx.stop_watching()
            logger.exception("unhandled error in request %s", ctx.request_id)
            ctx.status = 500
            self._record(ctx)
            if not ctx.responding:
                internal = GatewayError("internal gateway error", code="internal_error")
                headers = decision_headers(ctx.request_id, None, None)
                await respond(send, 500, api.error_body(internal), headers)
        finally:
            ctx.stop_watching()
            if ctx.tenant is not None:
                self.concurrency.release(ctx.tenant)
            self.metrics.finished()
            self._record(ctx)  # a client that left mid-stream: recorded here, once

    def _record(self, ctx: RequestContext) -> None:
        """The request's metrics, tokens and access line, once."""
        if ctx.recorded:
            return
        ctx.recorded = True
        elapsed = time.perf_counter() - ctx.started
        model = ctx.model or ""
        self.metrics.request(ctx.endpoint, model, ctx.status, elapsed)
        plan, usage = ctx.plan, ctx.usage
        if usage is not None:
            self.metrics.usage(model, usage["prompt_tokens"], usage["completion_tokens"],
                               usage.get("cached_prompt_tokens", 0))
        if self.tracer is not None:
            self.tracer.record(ctx)
        session = plan.session if plan else None
        self.access.request(
            request_id=ctx.request_id, endpoint=ctx.endpoint, status=ctx.status, model=model,
            route=plan.decision.route if plan else None,
            affinity=plan.status if plan else None,
            session=short_hash(session.affinity_id) if session else None,
            session_source=session.source if session else None,
            upstream_status=ctx.served.response.status if ctx.served else None,
            latency_ms=round(elapsed * 1000, 2),
            prompt_tokens=usage["prompt_tokens"] if usage else None,
            completion_tokens=usage["completion_tokens"] if usage else None,
        )

    async def _whole(self, ctx: RequestContext, served: Served, send: Send) -> None:
        started = time.perf_counter()
        body = await served.response.read()
        ctx.stop_watching()
        provider = served.provider
        self.metrics.upstream(provider.provider, provider.model, time.perf_counter() - started)
        translate = served.exchange.response_body
        assert ctx.request is not None
        # Counted from the provider's own answer: a translation carries the same counts, and
        # the untranslated body is the smaller one to read.
        ctx.usage = usage_of(body)
        if translate is not None:
            try:
                body = translate(ctx.request, body, provider.model_id)
            except UNREADABLE_ANSWER as exc:
                self.metrics.upstream_error(provider.provider, "bad_response")
                raise BadGateway(
                    f"upstream {provider.model} sent a response that cannot be translated",
                    reason="bad_response", code="upstream_bad_response",
                ) from exc
        if ctx.api.save is not None:
            await ctx.api.save(ctx.request, ctx.tenant or "", provider, ctx.route, body)
        ctx.status = 200
        ctx.responding = True
        self._record(ctx)
        await respond(send, 200, body, decision_headers(ctx.request_id, ctx.plan, provider.model))

    async def _estimate(self, ctx: RequestContext, tokens: int, send: Send) -> None:
        ctx.status = 200
        ctx.responding = True
        self._record(ctx)
        headers = decision_headers(ctx.request_id, ctx.plan, None)
        headers.append((b"x-gateway-token-estimate", b"chars/4"))
        await respond(send, 200, orjson.dumps({"input_tokens": tokens}), headers)

    async def _stream(self, ctx: RequestContext, served: Served, send: Send, receive: Receive) -> None:
        provider = served.provider
        api = ctx.api
        assert ctx.request is not None
        try:
            translator = served.exchange.stream(
                ctx.request, provider.model_id, self.config.upstream.max_sse_event_bytes)
            ctx.status = 200
            ctx.responding = True
            await send({
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                            *decision_headers(ctx.request_id, ctx.plan, provider.model)],
            })
        except BaseException:  # cancelled while the server waited to write: free the upstream
            served.response.close()
            raise

        save = api.save

        async def pump() -> None:
            first = True
            saved = False
            try:
                async for chunk in served.response.chunks():
                    out = translator.feed(chunk)
                    if save is not None and not saved and getattr(translator, "final", None) is not None:
                        saved = True  # kept before the client sees the end, so a follow-up finds it
                        await save(ctx.request, ctx.tenant or "", provider, ctx.route, translator.final)  # type: ignore[arg-type, attr-defined]
                    if out:
                        if first:
                            first = False
                            self.metrics.first_token(provider.model, time.perf_counter() - ctx.started)
                            if self.tracer is not None:
                                self.tracer.first_token(provider.model, time.perf_counter() - ctx.started)
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                tail = translator.close()
                if save is not None and not saved and getattr(translator, "final", None) is not None:
                    await save(ctx.request, ctx.tenant or "", provider, ctx.route, translator.final)  # type: ignore[arg-type, attr-defined]
            except GatewayError as error:  # mid-stream: the status is gone, so say it in-band
                self.metrics.upstream_error(provider.provider, getattr(error, "reason", "error"))
                tail = closing_event(translator, api, error)
            self.metrics.upstream(provider.provider, provider.model, time.perf_counter() - ctx.started)
            ctx.usage = translator.usage
            self._record(ctx)
            await send({"type": "http.response.body", "body": tail, "more_body": False})

        pumping = asyncio.ensure_future(pump())
        watching = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait((pumping, watching), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The server is stopping past its drain time: end the stream in-band, not by a cut,
            # and the request with it (no cancellation left for uvicorn to log as a crash).
            pumping.cancel()
            tail = closing_event(translator, api, shutting_down())
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            for task in (pumping, watching):
                task.cancel()
            served.response.close()  # a client that left closes the upstream request too
            if not ctx.recorded:
                # The client left first, often right after the stream's last event while the
                # upstream's end was still on its way: the tokens it used are counted all the same.
                ctx.usage = translator.usage
        if pumping.done() and not pumping.cancelled() and pumping.exception() is not None:
            raise pumping.exception()  # type: ignore[misc]

    async def decision(self, scope: Scope, receive: Receive, send: Send, api: ClientApi) -> None:
        """The routing decision only (Plano's /routing endpoints): no provider is called."""
        ctx = RequestContext(scope, api, "routing_" + api.endpoint, request_id(scope))
        try:
            plan = await self.prepare(ctx, receive, self.admit(scope))
        except GatewayError as error:
            ctx.status = error.status
            self._record(ctx)
            headers = decision_headers(ctx.request_id, None, None) + error.header_pairs()
            await respond(send, error.status, api.error_body(error), headers)
            return
        body = {
            "models": list(plan.decision.models),
            "route": plan.decision.route,
            "trace_id": ctx.request_id,
            # As sent in X-Model-Affinity, else the hashed key of the harness's session.
            "session_id": plan.session.affinity_id if plan.session else None,
            "session_source": plan.source,
            "pinned": plan.status in ("hit", "degraded") and plan.decision.source == "affinity",
        }
        ctx.status = 200
        self._record(ctx)
        await respond(send, 200, orjson.dumps(body), decision_headers(ctx.request_id, plan, None))

"""One request's path, in order: parse, authenticate, decide (pin lookup, route on a miss,
pin), call the provider, respond. The steps live in their own modules; their order lives here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from gateway.affinity import validate_affinity_id
from gateway.auth import Authenticator
from gateway.config import Config
from gateway.decider import Decider, Outcome
from gateway.dispatch import Dispatcher, Served
from gateway.errors import BadGateway, GatewayError, ServiceUnavailable, UpstreamError
from gateway.http import DisconnectWatch, header, read_body, respond, wait_for_disconnect
from gateway.limits import TenantConcurrency, check_header_size
from gateway.logs import AccessLog, short_hash
from gateway.metrics import Metrics
from gateway.parse import ChatRequest, parse_chat, parse_messages
from gateway.providers import ClientApi
from gateway.providers.anthropic_errors import anthropic_error_body
from gateway.providers.openai import usage_of
from gateway.sse import encode_event
from gateway.types import Headers, Receive, Scope, Send

logger = logging.getLogger("gateway.pipeline")


@dataclass(frozen=True, slots=True)
class Api:
    """What differs between the two client APIs: how requests parse and errors look."""

    name: ClientApi
    parse: Callable[[bytes, int], ChatRequest]
    error_body: Callable[[GatewayError], bytes]
    stream_error: Callable[[GatewayError], bytes]


def _openai_stream_error(error: GatewayError) -> bytes:
    return encode_event(error.body())


def _anthropic_error(error: GatewayError) -> bytes:
    return orjson.dumps(anthropic_error_body(error.status, error.message))


def _anthropic_stream_error(error: GatewayError) -> bytes:
    return encode_event(_anthropic_error(error), event="error")


OPENAI = Api("openai", parse_chat, GatewayError.body, _openai_stream_error)
ANTHROPIC = Api("anthropic", parse_messages, _anthropic_error, _anthropic_stream_error)


def request_id(scope: Scope) -> str:
    given = header(scope, b"x-request-id")
    if given and len(given) <= 128 and given.isprintable():
        return given
    return os.urandom(16).hex()  # 128 random bits like uuid4().hex, for 1.5 us instead of 3.7 us


def decision_headers(rid: str, outcome: Outcome | None, model: str | None) -> Headers:
    headers = [(b"x-request-id", rid.encode())]
    if outcome is not None and outcome.rerouted_from is not None:
        headers.append((b"x-gateway-rerouted-from", outcome.rerouted_from.encode()))
    if outcome is not None:
        headers += [
            (b"x-model-affinity-status", outcome.status.encode()),
            (b"x-gateway-model", (model or outcome.decision.model).encode()),
            (b"x-gateway-route", (outcome.decision.route or "").encode()),
        ]
    return headers


class Pipeline:
    def __init__(
        self, config: Config, auth: Authenticator, decider: Decider, dispatcher: Dispatcher,
        metrics: Metrics,
    ) -> None:
        self.config = config
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

    async def prepare(
        self, scope: Scope, receive: Receive, api: Api, tenant: str
    ) -> tuple[ChatRequest, Outcome]:
        body = await read_body(scope, receive, self.config.limits.max_body_bytes)
        request = api.parse(body, self.config.limits.max_messages)
        raw_id = header(scope, b"x-model-affinity")
        affinity_id = None if raw_id is None else validate_affinity_id(raw_id)
        return request, await self.decider.decide(request, affinity_id, tenant)

    async def complete(
        self, scope: Scope, receive: Receive, send: Send, api: Api, endpoint: str
    ) -> None:
        """A chat completion (or Anthropic message), streamed or whole."""
        started = time.perf_counter()
        rid = request_id(scope)
        outcome: Outcome | None = None
        served: Served | None = None
        usage: dict[str, int] | None = None
        status = 500
        responding = False  # once the response has begun, an error cannot become a status
        tenant: str | None = None
        watch: DisconnectWatch | None = None
        self.metrics.started()
        try:
            admitted = self.admit(scope)
            self.concurrency.acquire(admitted)
            tenant = admitted
            request, outcome = await self.prepare(scope, receive, api, tenant)
            watch = DisconnectWatch(receive)  # a client that leaves ends the upstream wait and read
            try:
                served = await self.dispatcher.call(request, outcome.decision, api.name)
                if outcome.key is not None and served.provider.model != outcome.decision.model:
                    outcome = await self.decider.follow(outcome, served.provider.model)
            except UpstreamError as failure:
                if failure.request_at_fault:  # no model is to blame: the pin stays
                    raise
                moved = await self.decider.reroute(request, outcome, outcome.decision.model)
                if moved is None:
                    raise
                outcome = moved
                served = await self.dispatcher.call(request, outcome.decision, api.name)
            headers = decision_headers(rid, outcome, served.provider.model)
            status = 200
            responding = True
            if request.stream:
                watch.stop()  # the stream watches for itself
                usage = await self._stream(served, request, api, headers, send, receive, started)
            else:
                usage = await self._whole(served, headers, send, watch)
        except asyncio.CancelledError:
            if watch is None or not watch.left:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            status = 499  # the client left: nobody to answer
            if served is not None:
                served.response.close()  # left between the headers and the body: dropped
        except GatewayError as error:
            if watch is not None:
                watch.stop()
            status = error.status
            model = served.provider.model if served else None
            extra = [(k.encode(), v.encode()) for k, v in error.headers.items()]
            await respond(send, status, api.error_body(error), decision_headers(rid, outcome, model) + extra)
        except Exception:
            # A bug, not a request problem: log it, answer in the API's envelope if still possible
            # (without Starlette's error middleware on this path, nobody else would).
            if watch is not None:
                watch.stop()
            logger.exception("unhandled error in request %s", rid)
            status = 500
            if not responding:
                internal = GatewayError("internal gateway error", code="internal_error")
                await respond(send, 500, api.error_body(internal), decision_headers(rid, None, None))
        finally:
            if watch is not None:
                watch.stop()
            if tenant is not None:
                self.concurrency.release(tenant)
            self.metrics.finished()
            self._record(scope, rid, endpoint, status, started, outcome, served, usage)

    def _record(
        self, scope: Scope, rid: str, endpoint: str, status: int, started: float,
        outcome: Outcome | None, served: Served | None = None, usage: dict[str, int] | None = None,
    ) -> None:
        """The request's metrics and access line. A request that failed upstream is counted
        under the model it was for (the one its x-gateway-model header names)."""
        elapsed = time.perf_counter() - started
        model = served.provider.model if served else outcome.decision.model if outcome else ""
        self.metrics.request(endpoint, model, status, elapsed)
        affinity_id = header(scope, b"x-model-affinity")
        self.access.request(
            request_id=rid, endpoint=endpoint, status=status, model=model,
            route=outcome.decision.route if outcome else None,
            affinity=outcome.status if outcome else None,
            session=short_hash(affinity_id) if affinity_id else None,
            upstream_status=served.response.status if served else None,
            latency_ms=round(elapsed * 1000, 2),
            prompt_tokens=usage["prompt_tokens"] if usage else None,
            completion_tokens=usage["completion_tokens"] if usage else None,
        )

    async def _whole(
        self, served: Served, headers: Headers, send: Send, watch: DisconnectWatch
    ) -> dict[str, int] | None:
        started = time.perf_counter()
        body = await served.response.read()
        watch.stop()
        provider = served.provider
        self.metrics.upstream(provider.provider, provider.model, time.perf_counter() - started)
        translate = served.exchange.response_body
        if translate is not None:
            try:
                body = translate(body, provider.model_id)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:  # orjson raises ValueError
                self.metrics.upstream_error(provider.provider, "bad_response")
                raise BadGateway(
                    f"upstream {provider.model} sent a response that cannot be translated",
                    reason="bad_response", code="upstream_bad_response",
                ) from exc
        usage = usage_of(body)
        if usage is not None:
            self.metrics.usage(provider.model, usage["prompt_tokens"], usage["completion_tokens"])
        await respond(send, 200, body, headers)
        return usage

    async def _stream(
        self, served: Served, request: ChatRequest, api: Api, headers: Headers,
        send: Send, receive: Receive, started: float,
    ) -> dict[str, int] | None:
        provider = served.provider
        try:
            translator = served.exchange.stream(provider.model_id, request.include_usage)
            await send({
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                            *headers],
            })
        except BaseException:  # cancelled while the server waited to write: free the upstream
            served.response.close()
            raise

        async def pump() -> None:
            first = True
            try:
                async for chunk in served.response.chunks():
                    out = translator.feed(chunk)
                    if out:
                        if first:
                            first = False
                            self.metrics.first_token(provider.model, time.perf_counter() - started)
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                tail = translator.close()
            except GatewayError as error:  # mid-stream: the status is gone, so say it in-band
                self.metrics.upstream_error(provider.provider, getattr(error, "reason", "error"))
                tail = api.stream_error(error)
            await send({"type": "http.response.body", "body": tail, "more_body": False})

        pumping = asyncio.ensure_future(pump())
        watching = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait((pumping, watching), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The server is stopping past its drain time: end the stream in-band, not by a cut.
            if not watching.done():
                pumping.cancel()
                closing = ServiceUnavailable("the gateway is shutting down", reason="shutdown")
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": api.stream_error(closing),
                                "more_body": False})
            raise
        finally:
            for task in (pumping, watching):
                task.cancel()
            served.response.close()  # a client that left closes the upstream request too
        if pumping.done() and not pumping.cancelled() and pumping.exception() is not None:
            raise pumping.exception()  # type: ignore[misc]
        self.metrics.upstream(provider.provider, provider.model, time.perf_counter() - started)
        usage = translator.usage
        if usage is not None:
            self.metrics.usage(provider.model, usage["prompt_tokens"], usage["completion_tokens"])
        return usage

    async def decision(
        self, scope: Scope, receive: Receive, send: Send, api: Api, endpoint: str
    ) -> None:
        """The routing decision only (Plano's /routing endpoints): no provider is called."""
        started = time.perf_counter()
        rid = request_id(scope)
        try:
            _, outcome = await self.prepare(scope, receive, api, self.admit(scope))
        except GatewayError as error:
            await respond(send, error.status, api.error_body(error), decision_headers(rid, None, None))
            self._record(scope, rid, endpoint, error.status, started, None)
            return
        body = {
            "models": list(outcome.decision.models),
            "route": outcome.decision.route,
            "trace_id": rid,
            "session_id": header(scope, b"x-model-affinity"),
            "pinned": outcome.status in ("hit", "degraded") and outcome.decision.source == "affinity",
        }
        await respond(send, 200, orjson.dumps(body), decision_headers(rid, outcome, None))
        self._record(scope, rid, endpoint, 200, started, outcome)

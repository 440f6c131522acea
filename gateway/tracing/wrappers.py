"""The affinity store and the router, each call a child span of the request's (when the
request is traced): `affinity get` / `pin` / `repin` / `delete` with `affinity.status`, and
`routing` with the router, the route and its source. Wrapped in create_app only when tracing
is on, so the decider and the dispatcher stay unaware of traces. Imported only then."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.trace import Span, StatusCode

from gateway.affinity import AffinityStore, LaneRef, Lookup, Pin, Pinned, Removal
from gateway.routing import RouteChoice, Router, Turn

if TYPE_CHECKING:
    from gateway.tracing.otel import OtelTracer

T = TypeVar("T")


async def in_span(span: Span | None, call: Awaitable[T], describe: Callable[[T], dict[str, Any]]) -> T:
    """Await `call` under `span` (if any), then put what `describe` says of the result on it."""
    if span is None:
        return await call
    try:
        result = await call
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR)
        span.end()
        raise
    span.set_attributes(describe(result))
    span.end()
    return result


def looked_up(lookup: Lookup) -> dict[str, Any]:
    status = "degraded" if lookup.degraded else ("hit" if lookup.pin is not None else "miss")
    attributes: dict[str, Any] = {"affinity.status": status}
    if lookup.pin is not None:
        attributes["affinity.pinned_model"] = lookup.pin.model
    return {**attributes, **extras(lookup)}


def pinned(result: Pinned) -> dict[str, Any]:
    # created: this replica's pin stands (a new session); otherwise another replica's did.
    status = "degraded" if result.degraded else ("new" if result.created else "hit")
    attributes = {"affinity.status": status, "affinity.pinned_model": result.pin.model}
    return {**attributes, **extras(result)}


def removed(removal: Removal) -> dict[str, Any]:
    return {"affinity.found": removal.found, "affinity.degraded": removal.degraded}


def extras(result: object) -> dict[str, Any]:
    """Where the store found the pin and its lane, for stores whose results say so."""
    found = {name: getattr(result, name, None) for name in ("source", "lane")}
    return {f"affinity.store.{name}": value for name, value in found.items() if isinstance(value, str)}


class TracedStore:
    """An AffinityStore whose calls are spans; everything else passes through."""

    def __init__(self, store: AffinityStore, tracer: OtelTracer) -> None:
        self.store = store
        self.tracer = tracer
        self.name = store.name

    def __getattr__(self, name: str) -> Any:  # what the store has beyond the protocol
        return getattr(self.store, name)

    def _span(self, operation: str, key: str) -> Span | None:
        return self.tracer.child(
            f"affinity {operation}", {"affinity.store": self.name, "gen_ai.conversation.id": key}
        )

    async def get(self, key: str, session: str | None = None, *, touch: bool = True) -> Lookup:
        return await in_span(self._span("get", key), self.store.get(key, session, touch=touch), looked_up)

    async def pin(self, key: str, pin: Pin, lane: LaneRef | None = None) -> Pinned:
        return await in_span(self._span("pin", key), self.store.pin(key, pin, lane), pinned)

    async def repin(self, key: str, old: Pin, new: Pin, lane: LaneRef | None = None) -> Pinned:
        return await in_span(self._span("repin", key), self.store.repin(key, old, new, lane), pinned)

    async def delete(self, key: str) -> Removal:
        return await in_span(self._span("delete", key), self.store.delete(key), removed)

    async def count(self) -> int:
        return await self.store.count()

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()


class TracedRouter:
    """A Router whose choices are spans."""

    def __init__(self, router: Router, tracer: OtelTracer) -> None:
        self.router = router
        self.tracer = tracer
        self.name = router.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)

    async def choose(self, turns: list[Turn]) -> RouteChoice:
        span = self.tracer.child("routing", {"gateway.router": self.name})
        return await in_span(span, self.router.choose(turns), chosen)

    async def close(self) -> None:
        await self.router.close()


def chosen(choice: RouteChoice) -> dict[str, Any]:
    return {"gateway.route": choice.route or "", "gateway.route.source": choice.source}

"""Getting spans out: the OTLP exporter (HTTP/protobuf or gRPC) behind a BatchSpanProcessor
whose queue is bounded, every span lost on the way counted in
gateway_trace_spans_dropped_total: dropped because the queue was full (a collector slower
than the traffic) or because its export failed (a collector that is down). The export runs in
the processor's thread; a request only ever appends to the queue. Imported only when tracing
is on (the `[tracing]` extra)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from gateway.config import TracingConfig
from gateway.metrics import Metrics

# The most a stopping replica waits for its last spans to leave: the export timeout, within
# this cap (the pod's grace period is sized for the drain, not for a collector that is down).
MAX_CLOSE_WAIT_S = 5.0


def otlp_exporter(config: TracingConfig) -> SpanExporter:
    """The exporter for the configured protocol. Its other settings (headers, certificates,
    compression) come from the standard OTEL_EXPORTER_OTLP_* variables, read by the exporter."""
    timeout = config.export_timeout_ms / 1000
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc(endpoint=config.otlp_endpoint, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http(endpoint=config.otlp_endpoint, timeout=timeout)


class CountingExporter(SpanExporter):
    """Counts the spans of a batch whose export failed: they are gone."""

    def __init__(self, exporter: SpanExporter, metrics: Metrics) -> None:
        self.exporter = exporter
        self.metrics = metrics
        self.closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception:  # an exporter bug must not kill the processor's thread either
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.metrics.spans_dropped.labels("export_failed").inc(len(spans))
        return result

    def shutdown(self) -> None:
        """Also what aborts an export still retrying when the replica stops (see `shut_down`)."""
        if not self.closed:
            self.closed = True
            self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that counts the spans its full queue pushes out. The queue is a
    deque bounded at max_queue_size that drops its oldest span to take a new one; the SDK only
    logs that, so the queue's length is checked before each span goes in."""

    def __init__(self, exporter: SpanExporter, config: TracingConfig, metrics: Metrics) -> None:
        super().__init__(
            exporter,
            max_queue_size=config.max_queue_size,
            schedule_delay_millis=config.batch_delay_ms,
            max_export_batch_size=min(512, config.max_queue_size),
            export_timeout_millis=config.export_timeout_ms,
        )
        self.dropped = metrics.spans_dropped.labels("queue_full")
        # The SDK keeps no public handle on its queue; tests/unit/test_tracing_export.py
        # checks this one still is the deque the spans go to.
        self.queue = self._batch_processor._queue
        self.capacity = config.max_queue_size

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            if len(self.queue) >= self.capacity:
                self.dropped.inc()
        super().on_end(span)


async def shut_down(
    shutdown: Callable[[], object], abort: Callable[[], object], config: TracingConfig
) -> None:
    """Run the provider's blocking shutdown (a last export) in a daemon thread, waiting at most
    the export timeout (capped): a collector that is down must not hold up the replica's exit.
    Past that, `abort` stops the exporter retrying, so the thread ends soon after too."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            shutdown()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(finished)

    threading.Thread(target=run, name="trace-shutdown", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), min(config.export_timeout_ms / 1000, MAX_CLOSE_WAIT_S))
    except TimeoutError:
        abort()

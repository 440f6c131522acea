"""The span processor's drop counting, against the SDK's own queue and worker."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gateway.config import TracingConfig
from gateway.metrics import Metrics
from gateway.tracing.export import CountingBatchSpanProcessor, CountingExporter
from tests.support import wait_for


class Stuck(SpanExporter):
    """A collector that hangs until released, then refuses: every export fails."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.released.wait(30)
        self.exported += len(spans)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


def dropped(metrics: Metrics, reason: str) -> Any:
    return metrics.registry.get_sample_value("gateway_trace_spans_dropped_total", {"reason": reason})


def test_a_full_queue_and_failed_exports_are_counted() -> None:
    metrics = Metrics()
    # A batch is the whole queue; no timer fires during the test.
    config = TracingConfig(enabled=True, max_queue_size=3, batch_delay_ms=600_000)
    stuck = Stuck()
    processor = CountingBatchSpanProcessor(CountingExporter(stuck, metrics), config, metrics)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    try:
        for _ in range(3):
            tracer.start_span("first batch").end()
        wait_for(stuck.entered.is_set, message="the full queue did not wake the worker")
        wait_for(lambda: not processor.queue, message="the worker did not take the batch")
        for _ in range(3):
            tracer.start_span("queued").end()
        assert len(processor.queue) == 3 and dropped(metrics, "queue_full") == 0
        for _ in range(2):
            tracer.start_span("over").end()
        assert len(processor.queue) == 3  # the SDK's deque kept its bound: two spans went
        assert dropped(metrics, "queue_full") == 2
    finally:
        stuck.released.set()
        provider.shutdown()
    assert stuck.exported == 6 and dropped(metrics, "export_failed") == 6

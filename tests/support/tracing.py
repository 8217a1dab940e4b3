"""The test process traces, as a service does, into memory: the in-process instances and
clients run the same interceptors and spans as deployed ones, and a test can read them."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from shared.config.models import Tracing
from shared.observability import tracing

# A test's calls, and its own spans around them, start traces as a tool's do: at the
# default ratio, so a flash sale of 500 orders is not traced through every service (the
# tests would measure tracing, not the system); a test that follows a trace marks its
# root span ALWAYS_SAMPLE.
ROOT_KINDS = frozenset({SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL})
RATIO = Tracing().sample_ratio


class RecentSpans(SpanExporter):
    """The last ``capacity`` finished spans (a whole test run would not fit in memory)."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._spans: deque[ReadableSpan] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def of_trace(self, trace_id: int) -> list[ReadableSpan]:
        with self._lock:
            return [
                s for s in self._spans if s.context is not None and s.context.trace_id == trace_id
            ]

    def shutdown(self) -> None:
        pass


def trace_the_test_process() -> RecentSpans:
    exporter = RecentSpans()
    sampler = tracing.LiveRatioSampler(lambda: RATIO, root_kinds=ROOT_KINDS)
    tracing.start_tracing("tests", "pytest", exporter, sampler)
    return exporter

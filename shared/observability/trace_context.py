"""W3C trace context carried from a gRPC call into events, and from event to event.

The saga is one trace: PlaceOrder's server span is current when the order's first
event is staged, the outbox stores that span's ``traceparent`` with the event, the
relay's publish span continues it into the Kafka record's headers, and a consumer
handles the record in a span whose parent is that header, so the events it stages
continue the same trace.

A consumer handles a batch of many orders' events in one transaction. Each event
gets its own span, and ``Outbox.add`` asks ``traceparent_for(aggregate_id)``: the
span of the event of the same aggregate (the same order) in this batch, not
whichever span happens to be current.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

HEADER = "traceparent"
_propagator = TraceContextTextMapPropagator()
_by_aggregate: ContextVar[Mapping[str, trace.Span] | None] = ContextVar(
    "shop_spans_by_aggregate", default=None
)


def traceparent_of(span: trace.Span | None = None) -> str | None:
    """The ``traceparent`` of ``span`` (default: the current one); None without a trace."""
    context = trace.set_span_in_context(span) if span is not None else None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    return carrier.get(HEADER)


def context_from(traceparent: str | None) -> Context:
    """The context a ``traceparent`` names (an empty one if it is missing or malformed)."""
    return _propagator.extract({HEADER: traceparent} if traceparent else {})


def traceparent_for(aggregate_id: str) -> str | None:
    """What an event about ``aggregate_id`` should carry: the span handling that
    aggregate's event in this batch, else the current span."""
    spans = _by_aggregate.get()
    if spans is not None and (span := spans.get(aggregate_id)) is not None:
        return traceparent_of(span)
    return traceparent_of()


@contextlib.contextmanager
def spans_by_aggregate(spans: Mapping[str, trace.Span]) -> Iterator[None]:
    token = _by_aggregate.set(spans)
    try:
        yield
    finally:
        _by_aggregate.reset(token)


def current_trace_id(span: trace.Span | None = None) -> str | None:
    """The trace id of ``span`` (default: the current one) in hex; None outside a trace."""
    context = (span or trace.get_current_span()).get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None

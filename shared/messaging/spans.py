"""The spans of the saga's Kafka hops: the relay's publish, and each event's handling.

The relay publishes each outbox row in a producer span whose parent is the context
stored with the row, and the record's header carries that span on. The consumer
handles each event in a span whose parent is that header.

``opentelemetry-instrumentation-aiokafka`` records a consume span but does not make
it current, and our consumer handles a whole poll in one transaction anyway, so the
consumer opens its own spans here: one per event, parented on the context in the
record's ``traceparent`` header. The events a handler stages take their trace from
the span of the event about the same aggregate (shared/observability/trace_context.py);
a lone event's span is also made current, so its queries and log lines join it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import asyncpg
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from shared.logs import journal
from shared.messaging.envelope import Event
from shared.observability import trace_context
from shared.observability.tracing import tracer


@contextlib.contextmanager
def _ended(spans: Sequence[trace.Span]) -> Iterator[None]:
    """Ends ``spans`` with the block; an error that leaves it marks them all."""
    try:
        yield
    except BaseException as error:
        for span in spans:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        for span in spans:
            span.end()


def _traceparent(record: ConsumerRecord) -> str | None:
    for key, value in record.headers or ():
        if key == trace_context.HEADER:
            return bytes(value).decode(errors="replace")
    return None


def _span(consumer: str, record: ConsumerRecord, event: Event) -> trace.Span:
    short_type = event.type.rsplit(".", 1)[-1]
    span = tracer().start_span(
        f"{consumer} handle {short_type}",
        context=trace_context.context_from(_traceparent(record)),
        kind=SpanKind.CONSUMER,
    )
    if span.is_recording():  # attributes only for a span that is kept: most are not
        span.set_attributes(
            {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": consumer,
                "messaging.message.id": str(event.event_id),
                "shop.event.type": event.type,
                "shop.aggregate.id": event.envelope.aggregate_id,
            }
        )
    return span


@contextlib.contextmanager
def handling_spans(consumer: str, events: Sequence[tuple[ConsumerRecord, Event]]) -> Iterator[None]:
    """Spans for ``events`` while the block handles them; an error marks them all."""
    spans = [_span(consumer, record, event) for record, event in events]
    by_aggregate = {
        event.envelope.aggregate_id: span for (_, event), span in zip(events, spans, strict=True)
    }
    current = (
        trace.use_span(spans[0], end_on_exit=False) if len(spans) == 1 else contextlib.nullcontext()
    )
    with _ended(spans), trace_context.spans_by_aggregate(by_aggregate), current:
        yield
        for span, (record, event) in zip(spans, events, strict=True):
            if not span.is_recording():  # only a sampled trace's steps are journalled
                continue
            with trace.use_span(span):
                journal(
                    "%s handled %s of %s (%s/%d/%d)",
                    consumer,
                    event.type.rsplit(".", 1)[-1],
                    event.envelope.aggregate_id,
                    record.topic,
                    record.partition,
                    record.offset,
                )


@contextlib.contextmanager
def publish_spans(rows: Sequence[asyncpg.Record]) -> Iterator[list[str | None]]:
    """A producer span per event, a child of the context stored with it; yields what
    each record's header carries on (the span's own context, so consumers hang off it)."""
    spans = []
    for row in rows:
        span = tracer().start_span(
            f"publish {row['topic']}",
            context=trace_context.context_from(row["traceparent"]),
            kind=SpanKind.PRODUCER,
        )
        if span.is_recording():
            span.set_attributes(
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": row["topic"],
                    "messaging.kafka.message.key": row["key"],
                }
            )
        spans.append(span)
    with _ended(spans):
        yield [
            trace_context.traceparent_of(span) or row["traceparent"]
            for row, span in zip(rows, spans, strict=True)
        ]


@contextlib.contextmanager
def aggregate_spans(name: str, traceparents: Mapping[str, str | None]) -> Iterator[None]:
    """A span per aggregate, continuing its trace, for work no event caused (the saga
    timeout): the events staged for each aggregate carry its span on."""
    spans = {
        aggregate: tracer().start_span(name, context=trace_context.context_from(traceparent))
        for aggregate, traceparent in traceparents.items()
    }
    with _ended(list(spans.values())), trace_context.spans_by_aggregate(spans):
        yield

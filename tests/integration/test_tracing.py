"""Trace context through the outbox, on the real PostgreSQL: an event carries the span
of the event about the same aggregate, and work no event caused (the saga timeout)
continues the aggregate's trace from its first event."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from opentelemetry import trace

from devstack.stack import Stack
from shared.db.migrations import apply_migrations
from shared.messaging.outbox import MIGRATIONS, Outbox, first_traceparents
from shared.messaging.spans import aggregate_spans
from shared.observability import trace_context
from shared.observability.tracing import ALWAYS_SAMPLE, tracer
from shop.events.v1 import order_events_pb2
from tests.support.services import recreate_database
from tests.support.tracing import RecentSpans

pytestmark = pytest.mark.integration
FOLLOWED = {ALWAYS_SAMPLE: True}  # kept whatever the test process's ratio


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    dsn = await recreate_database(stack, "tracing_test")
    await apply_migrations(dsn, MIGRATIONS)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def trace_id_of(traceparent: str | None) -> str:
    assert traceparent is not None
    return traceparent.split("-")[1]


async def stage(pool: asyncpg.Pool, aggregate_id: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        outbox = Outbox(conn)
        outbox.add(
            "shop.orders.v1", order_events_pb2.OrderCreated(order_id=aggregate_id), aggregate_id
        )
        await outbox.flush()


async def traceparents_of(pool: asyncpg.Pool, aggregate_id: str) -> list[str | None]:
    rows = await pool.fetch(
        "SELECT traceparent FROM outbox WHERE key = $1 ORDER BY id", aggregate_id
    )
    return [row["traceparent"] for row in rows]


async def test_an_event_staged_in_a_span_carries_it(pool: asyncpg.Pool) -> None:
    order = str(uuid.uuid4())
    with tracer().start_as_current_span(
        "place", kind=trace.SpanKind.CLIENT, attributes={"rpc.system": "grpc"}
    ) as span:
        await stage(pool, order)
    [stored] = await traceparents_of(pool, order)
    assert stored == trace_context.traceparent_of(span)


async def test_the_saga_timeout_continues_the_trace_of_the_orders_first_event(
    pool: asyncpg.Pool, recent_spans: RecentSpans
) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    placed = {}
    for order in (first, second):
        with tracer().start_as_current_span("place", attributes=FOLLOWED):
            await stage(pool, order)
        placed[order] = (await traceparents_of(pool, order))[0]
    assert trace_id_of(placed[first]) != trace_id_of(placed[second])

    async with pool.acquire() as conn:
        found = await first_traceparents(conn, [first, second, str(uuid.uuid4())])
    assert found == placed  # an aggregate with no event has no trace to continue

    # One batch, two orders: each cancellation joins its own order's trace.
    with aggregate_spans("saga timeout cancels the order", found):
        await stage(pool, first)
        await stage(pool, second)
    for order in (first, second):
        original, cancelled = await traceparents_of(pool, order)
        assert trace_id_of(cancelled) == trace_id_of(original)
        spans = recent_spans_of(recent_spans, trace_id_of(original))
        timeout_span = next(s for s in spans if s.name == "saga timeout cancels the order")
        assert timeout_span.parent is not None
        assert original is not None
        assert format(timeout_span.parent.span_id, "016x") == original.split("-")[2]


def recent_spans_of(recent: RecentSpans, trace_id: str) -> list:
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    return recent.of_trace(int(trace_id, 16))


async def test_without_a_trace_an_event_carries_none(pool: asyncpg.Pool) -> None:
    order = str(uuid.uuid4())
    await stage(pool, order)  # no span current: nothing to continue, nothing invented
    assert await traceparents_of(pool, order) == [None]

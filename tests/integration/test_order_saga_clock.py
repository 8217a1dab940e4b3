"""The saga clock on the real PostgreSQL (and, last, a real Kafka outage): the timeout
counts only time in which the saga could move, the wall-clock ceiling ends what is truly
stuck, and several instances move one clock at the rate of one.

A database of its own (``shop_order_clock``), so that no other order instance moves
this clock. Orders are written straight into it (no PlaceOrder, so no OrderCreated
reaches the shared test Kafka); the SagaTimeout instances are the real ones, on the real
database, with the link's health given as a flag (its real source, the consumer's fetch
answers, is the last test's).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import asyncpg
import pytest
import pytest_asyncio

from devstack import launcher
from devstack.stack import Stack
from services.order.adapters.saga_timeout import CAP_ROUNDS, SagaTimeout
from services.order.domain import (
    SAGA_TIMED_OUT,
    CatalogEntry,
    Order,
    OrderStatus,
    order_request,
    place_order,
)
from services.order.main import SERVICE as ORDER
from services.order.persistence import unit_of_work_factory
from shared.db.migrations import apply_migrations
from shared.messaging.outbox import MIGRATIONS as MESSAGING_MIGRATIONS
from shared.money import Money
from tests.support.services import run_service
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.integration

DATABASE = "shop_order_clock"
INTERVAL = 0.2  # rounds: fast, so the tests take seconds
CAP = CAP_ROUNDS * INTERVAL
# The outbox is not relayed here (no relay on this database): a stale window that its
# unsent OrderCancelled rows cannot reach. The outbox's own test sets the real one.
NO_OUTBOX_CHECK = 3600.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    dsn = await launcher.recreate_database(stack, DATABASE)
    await apply_migrations(dsn, MESSAGING_MIGRATIONS)
    await apply_migrations(dsn, ORDER.migrations)
    created = await asyncpg.create_pool(dsn, min_size=2, max_size=20)
    try:
        yield created
    finally:
        await created.close()


def saga_timeout(
    pool: asyncpg.Pool,
    *,
    timeout: float = 3600.0,
    ceiling: float = 36_000.0,
    healthy: Callable[[], bool] = lambda: True,
    stale: float = NO_OUTBOX_CHECK,
) -> SagaTimeout:
    return SagaTimeout(
        unit_of_work_factory(pool),
        timeout_seconds=timeout,
        ceiling_seconds=ceiling,
        link_healthy=healthy,
        batch_size=50,
        interval_seconds=INTERVAL,
        stale_seconds=stale,
    )


async def running(stack: AsyncExitStack, *timeouts: SagaTimeout) -> None:
    for timeout in timeouts:
        await timeout.start()
        stack.push_async_callback(timeout.stop)


async def new_order(pool: asyncpg.Pool) -> Order:
    """A PENDING order stored as PlaceOrder stores it (placed_clock: the clock now)."""
    entry = CatalogEntry(uuid.uuid4(), f"S-{uuid.uuid4().hex[:8].upper()}", Money(500, "USD"), True)
    request = order_request(f"k-{uuid.uuid4().hex}", [(str(entry.product_id), 1)])
    order = place_order(user_id=uuid.uuid4(), request=request, catalog={entry.product_id: entry})
    async with unit_of_work_factory(pool)() as uow:
        return await uow.orders.add(order)


async def clock(pool: asyncpg.Pool) -> float:
    return float(await pool.fetchval("SELECT seconds FROM saga_clock"))


async def placed_clock(pool: asyncpg.Pool, order: Order) -> float:
    return float(
        await pool.fetchval("SELECT placed_clock FROM orders WHERE order_id = $1", order.order_id)
    )


async def status(pool: asyncpg.Pool, order: Order) -> tuple[str, str]:
    row = await pool.fetchrow(
        "SELECT status, status_reason FROM orders WHERE order_id = $1", order.order_id
    )
    assert row is not None
    return row["status"], row["status_reason"]


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


def is_cancelled(pool: asyncpg.Pool, order: Order) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await status(pool, order))[0] == OrderStatus.CANCELLED.value

    return check


async def assert_timed_out_once(pool: asyncpg.Pool, order: Order) -> None:
    assert await status(pool, order) == (OrderStatus.CANCELLED.value, SAGA_TIMED_OUT)
    events = await pool.fetch("SELECT event_type FROM outbox WHERE key = $1", str(order.order_id))
    assert [row["event_type"] for row in events] == ["shop.events.v1.OrderCancelled"]


# --- the clock ----------------------------------------------------------------------------


async def test_an_order_takes_the_clock_at_placing(pool: asyncpg.Pool) -> None:
    # Moved by hand here only to see that the INSERT reads it, not a default.
    await pool.execute("UPDATE saga_clock SET seconds = seconds + 1234.5, advanced_at = now()")
    now = await clock(pool)
    order = await new_order(pool)
    # Plus the moments since the advance, which the next advance will add too.
    assert now <= await placed_clock(pool, order) < now + 0.5

    # Long after the last advance, only the cap: all the next advance will add for it.
    await pool.execute("UPDATE saga_clock SET advanced_at = now() - interval '100 s'")
    cap = float(await pool.fetchval("SELECT cap_seconds FROM saga_clock"))
    late = await new_order(pool)
    assert await placed_clock(pool, late) == now + cap
    await pool.execute("UPDATE saga_clock SET advanced_at = now()")  # as an advance leaves it
    # Settled (as a confirmation would), so the next tests' timeouts have only their own.
    await pool.execute(
        "UPDATE orders SET status = 'confirmed' WHERE order_id = ANY($1::uuid[])",
        [order.order_id, late.order_id],
    )


async def test_a_stuck_order_is_cancelled_once_the_clock_passes_its_timeout(
    pool: asyncpg.Pool,
) -> None:
    started = time.monotonic()
    order = await new_order(pool)  # no inventory answer will ever come
    timeout = saga_timeout(pool, timeout=1.5)
    async with AsyncExitStack() as stack:
        await running(stack, timeout)
        await asyncio.sleep(0.5)
        assert (await status(pool, order))[0] == OrderStatus.PENDING.value  # not yet due
        await until(is_cancelled(pool, order))
        waited = time.monotonic() - started
    await assert_timed_out_once(pool, order)
    assert await clock(pool) - await placed_clock(pool, order) > 1.5
    # Never before the timeout's wall time (the clock cannot outrun it), and soon after.
    assert 1.5 <= waited < 1.5 + 1.5
    assert timeout.cancelled == 1


async def test_time_the_link_is_unhealthy_does_not_count(pool: asyncpg.Pool) -> None:
    link = {"healthy": False}
    timeout = saga_timeout(pool, timeout=1.5, healthy=lambda: link["healthy"])
    order = await new_order(pool)
    before = await clock(pool)
    async with AsyncExitStack() as stack:
        await running(stack, timeout)
        await asyncio.sleep(3.0)  # twice the timeout, with Kafka "down"
        assert (await status(pool, order))[0] == OrderStatus.PENDING.value
        assert await clock(pool) == before
        assert timeout.clock_advances == 0

        link["healthy"] = True  # healed: the order's time runs again
        healed = time.monotonic()
        await until(is_cancelled(pool, order))
        waited = time.monotonic() - healed
    await assert_timed_out_once(pool, order)
    # The outage itself counted at most the cap, however long it was.
    assert waited >= 1.5 - CAP - INTERVAL


async def test_the_wall_clock_ceiling_cancels_whatever_the_clock_did(pool: asyncpg.Pool) -> None:
    order = await new_order(pool)
    before = await clock(pool)
    timeout = saga_timeout(pool, timeout=60, ceiling=1.5, healthy=lambda: False)
    async with AsyncExitStack() as stack:
        await running(stack, timeout)
        await until(is_cancelled(pool, order))
    age = await pool.fetchval(
        "SELECT extract(epoch FROM now() - created_at) FROM orders WHERE order_id = $1",
        order.order_id,
    )
    assert float(age) >= 1.5
    assert await clock(pool) == before  # the clock never moved: only the ceiling did it
    await assert_timed_out_once(pool, order)


async def test_two_instances_advance_the_clock_at_the_rate_of_one(pool: asyncpg.Pool) -> None:
    first, second = saga_timeout(pool), saga_timeout(pool)

    async def reading() -> tuple[float, float]:
        row = await pool.fetchrow(
            "SELECT seconds, extract(epoch FROM advanced_at)::float8 AS at FROM saga_clock"
        )
        assert row is not None
        return float(row["seconds"]), float(row["at"])

    async with AsyncExitStack() as stack:
        await running(stack, first, second)
        await asyncio.sleep(2 * INTERVAL)  # past the first advance, which may count the cap
        (seconds_0, at_0), wall_0 = await reading(), time.monotonic()
        await asyncio.sleep(3.0)
    # Then a burst: eight instances advancing at the same moment, a round apart, five times
    # (with the two above stopped: beside them a round can always come too soon after theirs).
    burst = [saga_timeout(pool) for _ in range(8)]
    for _ in range(5):
        await asyncio.gather(*(t.advance_clock() for t in burst))
        await asyncio.sleep(INTERVAL)
    (seconds_1, at_1), wall_1 = await reading(), time.monotonic()
    assert first.clock_advances > 0 and second.clock_advances > 0  # both took turns
    # One advance per round at most, however many tried; the first round may still come
    # too soon after the last of the two above.
    assert 4 <= sum(t.clock_advances for t in burst) <= 5
    # Each advance added exactly the time since the one before: one clock's worth.
    assert seconds_1 - seconds_0 == pytest.approx(at_1 - at_0, abs=1e-3)
    assert seconds_1 - seconds_0 == pytest.approx(wall_1 - wall_0, abs=2 * INTERVAL + 0.2)


async def test_an_event_stuck_in_the_outbox_stops_the_clock(pool: asyncpg.Pool) -> None:
    # What the relay would have done with the earlier tests' events.
    await pool.execute("UPDATE outbox SET sent_at = now() WHERE sent_at IS NULL")
    timeout = saga_timeout(pool, stale=3.0)
    await asyncio.sleep(INTERVAL)
    assert await timeout.advance_clock() is not None  # nothing waiting: it runs

    # An event no relay got out for 10 s (a broker down, a relay paused holding it).
    event_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO outbox (event_id, topic, key, event_type, payload, created_at) VALUES"
        " ($1, 'shop.orders.v1', 'k', 'shop.events.v1.OrderCreated', '', now() - interval '10 s')",
        event_id,
    )
    before = await clock(pool)
    for _ in range(3):
        await asyncio.sleep(INTERVAL)
        assert await timeout.advance_clock() is None
    assert await clock(pool) == before

    # Published at last (what the relay writes on Kafka's acknowledgement): it runs again.
    await pool.execute("UPDATE outbox SET sent_at = now() WHERE event_id = $1", event_id)
    await asyncio.sleep(INTERVAL)
    assert await timeout.advance_clock() is not None
    assert await clock(pool) > before


# --- a real instance, a real broker outage ------------------------------------------------


async def test_a_kafka_outage_stops_a_real_instances_clock_and_no_order_is_lost_to_it(
    stack: Stack, keys: TestKeys, pool: asyncpg.Pool
) -> None:
    dsn = stack.pg_dsn(DATABASE)
    timeout = 4.0

    async def clock_moves(over: float = 1.5) -> bool:
        first = await clock(pool)
        await asyncio.sleep(over)
        return await clock(pool) > first

    async def clock_stopped() -> bool:
        return not await clock_moves()

    settings = {"pg_dsn": dsn, "saga_timeout_seconds": timeout, "saga_timeout_max_seconds": 600}
    async with run_service(ORDER, stack, keys, **settings):
        await until(clock_moves, timeout=60)  # its consumer joined the group: healthy
        await asyncio.to_thread(stack.stop, "kafka")
        try:
            await until(clock_stopped, timeout=20)
            stopped_at = await clock(pool)
            order = await new_order(pool)
            await asyncio.sleep(timeout + 2)  # well past the timeout, in wall time
            assert (await status(pool, order))[0] == OrderStatus.PENDING.value
            assert await clock(pool) == stopped_at
        finally:
            await asyncio.to_thread(stack.start, "kafka")
        await until(is_cancelled(pool, order), timeout=90)  # its time runs once Kafka is back
    await assert_timed_out_once(pool, order)
    assert await clock(pool) - await placed_clock(pool, order) > timeout

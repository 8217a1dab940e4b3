"""Inventory's saga use cases against the real PostgreSQL: what only the database shows.

The saga's rules (reserve or reject, commit or release, compensation in any
order, tombstones, redelivery, malformed events) are unit tests on a fake unit
of work (tests/unit/inventory/). Here: that the SQL does what the fake does
(lines, savepoints, rows that do not exist), row locks and concurrency, the
merged hot-SKU path against the per-event one, and the running service's
wiring to Kafka. The use cases are called through the subscriptions, each
delivery in its own unit of work as the consumer would (one event per
transaction here; the consumer batches more). Every test uses its own SKUs and
orders, and ends with the audit's invariants for its SKUs: the ledger identity,
reserved == the RESERVED reservations' lines, sold == the COMMITTED reservations' lines.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from devstack.stack import Stack
from services.inventory.main import SERVICE
from services.inventory.persistence import PostgresInventoryUnitOfWork
from services.inventory.settings import InventorySettings
from services.inventory.subscriptions import SUBSCRIPTIONS
from shared.db.pool import create_pool
from shared.messaging.envelope import Event, wrap
from shared.messaging.kafka import KafkaIdentity, kafka_producer
from shared.messaging.topics import ORDERS, PAYMENTS
from shop.events.v1 import inventory_events_pb2
from tests.support.inventory_database import (
    audit,
    deliver,
    deliver_merged,
    emitted,
    emitted_payloads,
    new_sku,
    set_stock,
    state,
    state_counts,
    stock,
)
from tests.support.inventory_events import (
    TOTAL,
    USER_ID,
    event_of,
    new_order,
    order_cancelled,
    order_created,
    payment_succeeded,
)
from tests.support.services import recreate_database, run_service
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dsn(stack: Stack) -> str:
    # Not shop_inventory: the API tests own that database.
    dsn = await recreate_database(stack, "inventory_saga")
    await SERVICE.migrate(InventorySettings(pg_dsn=dsn))
    return dsn


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    db = await create_pool(dsn, min_size=2, max_size=50)
    yield db
    await db.close()


# --- the SQL of one reservation: lines, the savepoint, a SKU with no row -------------------------


async def test_multi_line_order_reserves_every_line(pool: asyncpg.Pool) -> None:
    skus = sorted(new_sku() for _ in range(3))
    for s in skus:
        await set_stock(pool, s, 5)
    order = new_order()
    # Out of SKU order, with one SKU on two lines: the reservation is one line per SKU.
    await deliver(
        pool, order_created(order, (skus[2], 1), (skus[0], 2), (skus[1], 5), (skus[0], 3))
    )
    assert [await stock(pool, s) for s in skus] == [(0, 5, 0, 5), (0, 5, 0, 5), (4, 1, 0, 5)]
    async with PostgresInventoryUnitOfWork(pool) as uow:
        reservation = await uow.reservations.get(uuid.UUID(order))
    assert reservation is not None
    assert [(line.sku, line.quantity) for line in reservation.lines] == [
        (skus[0], 5),
        (skus[1], 5),
        (skus[2], 1),
    ]
    assert reservation.total is not None and reservation.total.amount_minor == 4200
    # Recorded as a domain event, staged in the outbox in the same transaction.
    assert await emitted_payloads(pool, order) == [
        inventory_events_pb2.InventoryReserved(order_id=order, user_id=USER_ID, total=TOTAL)
    ]
    await audit(pool, skus)


async def test_short_second_line_reserves_nothing(pool: asyncpg.Pool) -> None:
    first, second, third = sorted(new_sku() for _ in range(3))
    await set_stock(pool, first, 10)
    await set_stock(pool, second, 1)
    await set_stock(pool, third, 10)
    order = new_order()
    await deliver(pool, order_created(order, (first, 2), (second, 2), (third, 2)))

    assert await stock(pool, first) == (10, 0, 0, 10)  # held, then undone with the savepoint
    assert await stock(pool, second) == (1, 0, 0, 1)
    assert await stock(pool, third) == (10, 0, 0, 10)
    assert await state(pool, order) == "rejected"
    [rejected] = await emitted_payloads(pool, order)
    assert rejected == inventory_events_pb2.InventoryRejected(
        order_id=order, sku=second, reason="out of stock"
    )
    await audit(pool, [first, second, third])


async def test_unknown_sku_is_out_of_stock(pool: asyncpg.Pool) -> None:
    known, unknown, order = new_sku(), new_sku(), new_order()
    await set_stock(pool, known, 5)
    await deliver(pool, order_created(order, (known, 1), (unknown, 1)))
    [rejected] = await emitted_payloads(pool, order)
    assert rejected == inventory_events_pb2.InventoryRejected(
        order_id=order, sku=unknown, reason="out of stock"
    )
    assert await stock(pool, known) == (5, 0, 0, 5)
    assert await pool.fetchval("SELECT count(*) FROM stock WHERE sku = $1", unknown) == 0


# --- concurrency --------------------------------------------------------------------------------


async def test_200_concurrent_orders_for_20_units(pool: asyncpg.Pool) -> None:
    sku = new_sku()
    await set_stock(pool, sku, 20)
    orders = [new_order() for _ in range(200)]
    await asyncio.gather(*(deliver(pool, order_created(o, (sku, 1))) for o in orders))

    states = await state_counts(pool, orders)
    assert states == {"reserved": 20, "rejected": 180}
    assert await stock(pool, sku) == (0, 20, 0, 20)
    events = await pool.fetch(
        "SELECT event_type, count(*) FROM outbox WHERE key = ANY($1::text[]) GROUP BY 1", orders
    )
    assert {r["event_type"]: r["count"] for r in events} == {
        "shop.events.v1.InventoryReserved": 20,
        "shop.events.v1.InventoryRejected": 180,
    }
    await audit(pool, [sku])


async def test_concurrent_multi_line_orders_in_both_sku_orders_do_not_deadlock(
    pool: asyncpg.Pool,
) -> None:
    a, b, c = sorted(new_sku() for _ in range(3))
    for s in (a, b, c):
        await set_stock(pool, s, 30)
    shapes = [((a, 1), (b, 1), (c, 1)), ((c, 1), (b, 1), (a, 1)), ((b, 1), (a, 1))]
    orders = [(new_order(), shapes[i % 3]) for i in range(120)]
    await asyncio.gather(*(deliver(pool, order_created(o, *lines)) for o, lines in orders))

    reserved = await pool.fetch(
        "SELECT order_id FROM reservations WHERE order_id = ANY($1::uuid[]) AND state = 'reserved'",
        [uuid.UUID(o) for o, _ in orders],
    )
    assert 0 < len(reserved) <= 30
    await audit(pool, [a, b, c])
    assert (await stock(pool, b))[1] == len(reserved) == 30  # every order needs a unit of b


@pytest.mark.parametrize("row_locks", [True, False], ids=["locked-first", "no-row-locks"])
async def test_two_instances_batches_in_crossed_sku_orders_wait_instead_of_deadlocking(
    pool: asyncpg.Pool, row_locks: bool
) -> None:
    """Two instances each handle a batch in one transaction: one sells x then commits a
    sale of y, the other sells y then commits a sale of x. Event by event, their locks
    cross and PostgreSQL kills one as a deadlock (after deadlock_timeout); with the
    batch's stock rows locked first, in SKU order, the second batch waits for the first."""
    x, y = sorted(new_sku() for _ in range(2))
    for s in (x, y):
        await set_stock(pool, s, 10)
    held_x, held_y = new_order(), new_order()
    await deliver(pool, order_created(held_x, (x, 1)))
    await deliver(pool, order_created(held_y, (y, 1)))
    first = [event_of(order_created(new_order(), (x, 1))), event_of(payment_succeeded(held_y))]
    second = [event_of(order_created(new_order(), (y, 1))), event_of(payment_succeeded(held_x))]

    async def handle_batch(events: list[Event]) -> None:
        async with PostgresInventoryUnitOfWork(pool) as uow:
            if row_locks:
                lock_rows = SUBSCRIPTIONS.lock_rows()
                assert lock_rows is not None
                await lock_rows(uow, events)
            for i, event in enumerate(events):
                await SUBSCRIPTIONS.handlers[event.type](uow, event)
                if i == 0:
                    await asyncio.sleep(0.3)  # the other batch takes its first lock meanwhile

    outcomes = await asyncio.gather(
        handle_batch(first), handle_batch(second), return_exceptions=True
    )
    deadlocks = [o for o in outcomes if isinstance(o, asyncpg.DeadlockDetectedError)]
    if row_locks:
        assert outcomes == [None, None]
        assert (await stock(pool, x))[1:3] == (1, 1) and (await stock(pool, y))[1:3] == (1, 1)
    else:  # what the row locks are for
        assert len(deadlocks) == 1, outcomes
    await audit(pool, [x, y])


async def test_cancel_racing_payment_ends_released_either_way(pool: asyncpg.Pool) -> None:
    sku = new_sku()
    await set_stock(pool, sku, 50)
    orders = [new_order() for _ in range(50)]
    for order in orders:
        await deliver(pool, order_created(order, (sku, 1)))
    await asyncio.gather(
        *(
            call
            for order in orders
            for call in (
                deliver(pool, payment_succeeded(order)),
                deliver(pool, order_cancelled(order)),
            )
        )
    )
    states = await state_counts(pool, orders)
    assert states == {"released": 50}
    assert await stock(pool, sku) == (50, 0, 0, 50)
    for order in orders:
        # Payment first: committed then un-sold; cancel first: released, payment ignored.
        assert (await emitted(pool, order))[-1] == "InventoryReleased"
    await audit(pool, [sku])


async def test_concurrent_creation_and_cancellation_of_one_order(pool: asyncpg.Pool) -> None:
    """OrderCreated and OrderCancelled racing (two relays, a rebalance): one claim wins."""
    sku = new_sku()
    await set_stock(pool, sku, 100)
    orders = [new_order() for _ in range(50)]
    await asyncio.gather(
        *(
            call
            for order in orders
            for call in (
                deliver(pool, order_created(order, (sku, 1))),
                deliver(pool, order_cancelled(order)),
            )
        )
    )
    states = await state_counts(pool, orders)
    # Created first: reserved then released; cancelled first: a tombstone.
    assert set(states) <= {"released", "cancelled"}
    assert sum(states.values()) == 50
    assert await stock(pool, sku) == (100, 0, 0, 100)
    await audit(pool, [sku])


# --- wiring: the running service takes these events from Kafka ----------------------------------


async def test_running_service_consumes_the_saga_topics(
    stack: Stack, keys: TestKeys, dsn: str, pool: asyncpg.Pool
) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 3)
    producer = kafka_producer(stack.kafka_bootstrap, KafkaIdentity.operator(stack.tls_dir))
    await producer.start()
    try:
        async with run_service(SERVICE, stack, keys, pg_dsn=dsn):
            # One at a time, as the saga does: payment charges only after InventoryReserved,
            # and the two topics are consumed concurrently, in no order between them.
            for sent, (topic, payload) in enumerate(
                [(ORDERS, order_created(order, (sku, 2))), (PAYMENTS, payment_succeeded(order))],
                start=1,
            ):
                await producer.send_and_wait(
                    topic, wrap(payload, order).SerializeToString(), key=order.encode()
                )
                async with asyncio.timeout(60):
                    while (
                        await pool.fetchval(
                            "SELECT count(*) FROM outbox WHERE key = $1 AND sent_at IS NOT NULL",
                            order,
                        )
                        < sent
                    ):
                        await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    assert await state(pool, order) == "committed"
    assert await stock(pool, sku) == (1, 0, 2, 3)
    assert await emitted(pool, order) == ["InventoryReserved", "InventoryCommitted"]


# --- the merged (hot-SKU) path: many OrderCreated in one call ----------------------------------


async def test_merged_run_is_first_fit_like_one_event_at_a_time(pool: asyncpg.Pool) -> None:
    """available 5, asks 3, 3, 2, 1: the second does not fit, the third takes the rest."""
    merged_sku, single_sku = new_sku(), new_sku()
    asks = [3, 3, 2, 1]
    await set_stock(pool, merged_sku, 5)
    await set_stock(pool, single_sku, 5)
    merged = [new_order() for _ in asks]
    single = [new_order() for _ in asks]
    await deliver_merged(
        pool, [order_created(o, (merged_sku, q)) for o, q in zip(merged, asks, strict=True)]
    )
    for o, q in zip(single, asks, strict=True):
        await deliver(pool, order_created(o, (single_sku, q)))

    expected = ["reserved", "rejected", "reserved", "rejected"]
    assert [await state(pool, o) for o in merged] == expected
    assert [await state(pool, o) for o in single] == expected
    assert await stock(pool, merged_sku) == await stock(pool, single_sku) == (0, 5, 0, 5)
    await audit(pool, [merged_sku, single_sku])


async def test_merged_run_mixes_skus_lines_tombstones_and_unknown_skus(pool: asyncpg.Pool) -> None:
    a, b, unknown = new_sku(), new_sku(), new_sku()
    await set_stock(pool, a, 2)
    await set_stock(pool, b, 1)
    tombstoned, multi, on_a, on_b, on_unknown, also_a = (new_order() for _ in range(6))
    await deliver(pool, order_cancelled(tombstoned))
    await deliver_merged(
        pool,
        [
            order_created(tombstoned, (a, 1)),
            order_created(multi, (a, 1), (b, 1)),
            order_created(on_a, (a, 1)),
            order_created(on_b, (b, 1)),
            order_created(on_unknown, (unknown, 1)),
            order_created(also_a, (a, 1)),
        ],
    )
    assert await state(pool, tombstoned) == "cancelled"  # a cancel that came first wins
    assert await emitted(pool, tombstoned) == []
    assert await state(pool, multi) == "reserved"  # the per-event path, all lines held
    assert await state(pool, on_a) == "reserved"
    assert await state(pool, on_b) == "rejected"  # the multi-line order took b's only unit
    assert await state(pool, on_unknown) == "rejected"
    assert await state(pool, also_a) == "rejected"
    assert await stock(pool, a) == (0, 2, 0, 2)
    await audit(pool, [a, b])


async def test_concurrent_merged_runs_never_oversell(pool: asyncpg.Pool) -> None:
    sku = new_sku()
    await set_stock(pool, sku, 50)
    runs = [[order_created(new_order(), (sku, 1)) for _ in range(40)] for _ in range(10)]
    await asyncio.gather(*(deliver_merged(pool, run) for run in runs))
    orders = [p.order_id for run in runs for p in run]
    assert await state_counts(pool, orders) == {"reserved": 50, "rejected": 350}
    assert await stock(pool, sku) == (0, 50, 0, 50)
    await audit(pool, [sku])

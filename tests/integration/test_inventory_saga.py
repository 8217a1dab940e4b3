"""Inventory's saga handlers against the real PostgreSQL: reserve, commit, release, compensate.

The handlers are called directly, each delivery in its own unit of work as the
consumer would (one event per transaction here; the consumer batches more).
Every test uses its own SKUs and orders, and ends with the audit's invariants
for its SKUs: the ledger identity, reserved == the RESERVED reservations' lines,
sold == the COMMITTED reservations' lines.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence

import asyncpg
import pytest
import pytest_asyncio
from google.protobuf.message import Message

from devstack.stack import Stack
from services.inventory.event_handlers import SUBSCRIPTIONS
from services.inventory.main import SERVICE
from services.inventory.persistence import InventoryUnitOfWork
from services.inventory.settings import InventorySettings
from shared.db.pool import create_pool
from shared.errors import InvalidArgument
from shared.messaging.envelope import Event, unwrap, wrap
from shared.messaging.kafka import KafkaIdentity, kafka_producer
from shared.messaging.topics import ORDERS, PAYMENTS
from shop.common.v1 import money_pb2
from shop.events.v1 import inventory_events_pb2, order_events_pb2, payment_events_pb2
from tests.support.services import recreate_database, run_service
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.integration

USER_ID = str(uuid.uuid4())
TOTAL = money_pb2.Money(amount_minor=4200, currency="EUR")


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


# --- helpers ------------------------------------------------------------------------------------


def new_sku() -> str:
    return f"SAGA-{uuid.uuid4().hex[:12].upper()}"


def new_order() -> str:
    return str(uuid.uuid4())


def order_created(order_id: str, *lines: tuple[str, int]) -> order_events_pb2.OrderCreated:
    return order_events_pb2.OrderCreated(
        order_id=order_id,
        user_id=USER_ID,
        total=TOTAL,
        lines=[order_events_pb2.OrderLine(sku=sku, quantity=q) for sku, q in lines],
    )


def order_cancelled(
    order_id: str, reason: str = "cancelled by customer"
) -> order_events_pb2.OrderCancelled:
    return order_events_pb2.OrderCancelled(order_id=order_id, user_id=USER_ID, reason=reason)


def payment_succeeded(order_id: str) -> payment_events_pb2.PaymentSucceeded:
    return payment_events_pb2.PaymentSucceeded(
        order_id=order_id, charge_id=str(uuid.uuid4()), amount=TOTAL
    )


def payment_failed(order_id: str) -> payment_events_pb2.PaymentFailed:
    return payment_events_pb2.PaymentFailed(order_id=order_id, reason="insufficient funds")


def event_of(payload: Message) -> Event:
    order_id = payload.order_id  # type: ignore[attr-defined]
    return Event(envelope=wrap(payload, order_id), payload=payload)


async def deliver(pool: asyncpg.Pool, event: Event | Message) -> None:
    """One delivery in its own unit of work, through the handler SUBSCRIPTIONS names."""
    if not isinstance(event, Event):
        event = event_of(event)
    async with InventoryUnitOfWork(pool) as uow:
        await SUBSCRIPTIONS.handlers[event.type](uow, event)


async def set_stock(pool: asyncpg.Pool, sku: str, available: int) -> None:
    async with InventoryUnitOfWork(pool) as uow:
        await uow.stock.set_available(sku, available)


async def stock(pool: asyncpg.Pool, sku: str) -> tuple[int, int, int, int]:
    """(available, reserved, sold, total_received), with the ledger identity asserted."""
    row = await pool.fetchrow(
        "SELECT available, reserved, sold, total_received FROM stock WHERE sku = $1", sku
    )
    assert row is not None, sku
    available, reserved, sold, total = row
    assert available + reserved + sold == total, dict(row)
    return available, reserved, sold, total


async def state(pool: asyncpg.Pool, order_id: str) -> str | None:
    return await pool.fetchval(
        "SELECT state FROM reservations WHERE order_id = $1", uuid.UUID(order_id)
    )


async def state_counts(pool: asyncpg.Pool, orders: list[str]) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT state, count(*) AS n FROM reservations WHERE order_id = ANY($1::uuid[])"
        " GROUP BY state",
        [uuid.UUID(o) for o in orders],
    )
    return {r["state"]: r["n"] for r in rows}


async def emitted(pool: asyncpg.Pool, order_id: str) -> list[str]:
    rows = await pool.fetch("SELECT event_type FROM outbox WHERE key = $1 ORDER BY id", order_id)
    return [r["event_type"].rsplit(".", 1)[1] for r in rows]


async def emitted_payloads(pool: asyncpg.Pool, order_id: str) -> list[Message]:
    rows = await pool.fetch("SELECT payload FROM outbox WHERE key = $1 ORDER BY id", order_id)
    return [unwrap(r["payload"]).payload for r in rows]


async def audit(pool: asyncpg.Pool, skus: Iterable[str]) -> None:
    """The invariants the saga audit checks, for these SKUs, in plain SQL."""
    rows = await pool.fetch(
        """
        SELECT s.sku, s.available, s.reserved, s.sold, s.total_received,
               coalesce(sum(l.quantity) FILTER (WHERE r.state = 'reserved'), 0) AS held,
               coalesce(sum(l.quantity) FILTER (WHERE r.state = 'committed'), 0) AS sold_lines
        FROM stock s
        LEFT JOIN reservation_lines l ON l.sku = s.sku
        LEFT JOIN reservations r ON r.order_id = l.order_id
        WHERE s.sku = ANY($1::text[])
        GROUP BY s.sku
        """,
        list(skus),
    )
    for row in rows:
        assert row["available"] >= 0 and row["reserved"] >= 0, dict(row)
        assert row["available"] + row["reserved"] + row["sold"] == row["total_received"], dict(row)
        assert row["reserved"] == row["held"], dict(row)
        assert row["sold"] == row["sold_lines"], dict(row)


# --- the happy paths ----------------------------------------------------------------------------


async def test_reserve_then_commit(pool: asyncpg.Pool) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 10)

    await deliver(pool, order_created(order, (sku, 3)))
    assert await stock(pool, sku) == (7, 3, 0, 10)
    assert await state(pool, order) == "reserved"
    [reserved] = await emitted_payloads(pool, order)
    assert reserved == inventory_events_pb2.InventoryReserved(
        order_id=order, user_id=USER_ID, total=TOTAL
    )

    await deliver(pool, payment_succeeded(order))
    assert await stock(pool, sku) == (7, 0, 3, 10)
    assert await state(pool, order) == "committed"
    assert await emitted(pool, order) == ["InventoryReserved", "InventoryCommitted"]
    await audit(pool, [sku])


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
    async with InventoryUnitOfWork(pool) as uow:
        reservation = await uow.reservations.get(uuid.UUID(order))
    assert reservation is not None
    assert [(line.sku, line.quantity) for line in reservation.lines] == [
        (skus[0], 5),
        (skus[1], 5),
        (skus[2], 1),
    ]
    assert reservation.total is not None and reservation.total.amount_minor == 4200
    assert await emitted(pool, order) == ["InventoryReserved"]
    await audit(pool, skus)


async def test_payment_failed_releases(pool: asyncpg.Pool) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 4)
    await deliver(pool, order_created(order, (sku, 4)))
    assert await stock(pool, sku) == (0, 4, 0, 4)

    await deliver(pool, payment_failed(order))
    assert await stock(pool, sku) == (4, 0, 0, 4)
    assert await state(pool, order) == "released"
    payloads = await emitted_payloads(pool, order)
    assert payloads[-1] == inventory_events_pb2.InventoryReleased(
        order_id=order, reason="payment failed"
    )
    await audit(pool, [sku])


# --- rejection: all lines or none ---------------------------------------------------------------


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


async def test_the_first_short_sku_is_named(pool: asyncpg.Pool) -> None:
    skus = sorted(new_sku() for _ in range(3))
    await set_stock(pool, skus[0], 10)
    await set_stock(pool, skus[1], 0)
    await set_stock(pool, skus[2], 0)
    order = new_order()
    await deliver(pool, order_created(order, (skus[2], 1), (skus[1], 1), (skus[0], 1)))
    [rejected] = await emitted_payloads(pool, order)
    assert isinstance(rejected, inventory_events_pb2.InventoryRejected)
    assert rejected.sku == skus[1]
    assert await stock(pool, skus[0]) == (10, 0, 0, 10)


async def test_single_short_line_is_rejected(pool: asyncpg.Pool) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 2)
    await deliver(pool, order_created(order, (sku, 3)))
    assert await stock(pool, sku) == (2, 0, 0, 2)
    assert await state(pool, order) == "rejected"
    assert await emitted(pool, order) == ["InventoryRejected"]


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


async def test_exactly_the_available_units_can_be_reserved(pool: asyncpg.Pool) -> None:
    sku = new_sku()
    await set_stock(pool, sku, 3)
    first, second = new_order(), new_order()
    await deliver(pool, order_created(first, (sku, 3)))
    await deliver(pool, order_created(second, (sku, 1)))
    assert (await state(pool, first), await state(pool, second)) == ("reserved", "rejected")
    assert await stock(pool, sku) == (0, 3, 0, 3)
    await audit(pool, [sku])


# --- redelivery ---------------------------------------------------------------------------------


async def test_redelivered_events_change_nothing(pool: asyncpg.Pool) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 10)
    created = event_of(order_created(order, (sku, 2)))
    for again in (created, created, event_of(order_created(order, (sku, 2)))):
        await deliver(pool, again)  # the same event, and a republished copy with a new id
    assert await stock(pool, sku) == (8, 2, 0, 10)
    assert await emitted(pool, order) == ["InventoryReserved"]

    paid = event_of(payment_succeeded(order))
    for again in (paid, paid, event_of(payment_succeeded(order))):
        await deliver(pool, again)
    assert await stock(pool, sku) == (8, 0, 2, 10)
    assert await emitted(pool, order) == ["InventoryReserved", "InventoryCommitted"]
    await audit(pool, [sku])


async def test_redelivered_rejection_and_failure_change_nothing(pool: asyncpg.Pool) -> None:
    sku = new_sku()
    await set_stock(pool, sku, 1)
    rejected, failed = new_order(), new_order()
    for _ in range(2):
        await deliver(pool, order_created(rejected, (sku, 2)))
    assert await emitted(pool, rejected) == ["InventoryRejected"]

    await deliver(pool, order_created(failed, (sku, 1)))
    for _ in range(2):
        await deliver(pool, payment_failed(failed))
    assert await emitted(pool, failed) == ["InventoryReserved", "InventoryReleased"]
    assert await stock(pool, sku) == (1, 0, 0, 1)
    await audit(pool, [sku])


async def test_a_late_payment_failure_does_not_undo_a_sale(pool: asyncpg.Pool) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 5)
    await deliver(pool, order_created(order, (sku, 5)))
    await deliver(pool, payment_succeeded(order))
    await deliver(pool, payment_failed(order))
    assert await state(pool, order) == "committed"
    assert await stock(pool, sku) == (0, 0, 5, 5)
    assert await emitted(pool, order) == ["InventoryReserved", "InventoryCommitted"]


# --- compensation, in every order ---------------------------------------------------------------


async def test_cancel_before_creation_leaves_a_tombstone(pool: asyncpg.Pool) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 5)
    await deliver(pool, order_cancelled(order, "saga timeout"))
    assert await state(pool, order) == "cancelled"
    assert await emitted(pool, order) == []

    await deliver(pool, order_created(order, (sku, 2)))  # arrives late: holds nothing
    await deliver(pool, payment_succeeded(order))
    await deliver(pool, payment_failed(order))
    await deliver(pool, order_cancelled(order, "again"))
    assert await state(pool, order) == "cancelled"
    assert await stock(pool, sku) == (5, 0, 0, 5)
    assert await emitted(pool, order) == []
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM reservation_lines WHERE order_id = $1", uuid.UUID(order)
        )
        == 0
    )
    reason = await pool.fetchval(
        "SELECT reason FROM reservations WHERE order_id = $1", uuid.UUID(order)
    )
    assert reason == "saga timeout"
    await audit(pool, [sku])


async def test_cancel_releases_a_reservation_once(pool: asyncpg.Pool) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 5)
    await deliver(pool, order_created(order, (sku, 3)))
    for _ in range(2):
        await deliver(pool, order_cancelled(order, "cancelled by customer"))
    assert await stock(pool, sku) == (5, 0, 0, 5)
    assert await state(pool, order) == "released"
    payloads = await emitted_payloads(pool, order)
    assert [type(p).__name__ for p in payloads] == ["InventoryReserved", "InventoryReleased"]
    assert payloads[1] == inventory_events_pb2.InventoryReleased(
        order_id=order, reason="cancelled by customer"
    )
    await audit(pool, [sku])


async def test_payment_after_cancel_commits_nothing(pool: asyncpg.Pool) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 5)
    await deliver(pool, order_created(order, (sku, 3)))
    await deliver(pool, order_cancelled(order))
    await deliver(pool, payment_succeeded(order))  # payment refunds on its own
    await deliver(pool, payment_failed(order))
    assert await state(pool, order) == "released"
    assert await stock(pool, sku) == (5, 0, 0, 5)
    assert await emitted(pool, order) == ["InventoryReserved", "InventoryReleased"]
    await audit(pool, [sku])


async def test_cancel_after_commit_unsells(pool: asyncpg.Pool) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 5)
    await deliver(pool, order_created(order, (sku, 2)))
    await deliver(pool, payment_succeeded(order))
    assert await stock(pool, sku) == (3, 0, 2, 5)
    for _ in range(2):
        await deliver(pool, order_cancelled(order, "saga timeout"))
    assert await stock(pool, sku) == (5, 0, 0, 5)
    assert await state(pool, order) == "released"
    assert await emitted(pool, order) == [
        "InventoryReserved",
        "InventoryCommitted",
        "InventoryReleased",
    ]
    await audit(pool, [sku])


async def test_cancel_after_rejection_or_failure_does_nothing(pool: asyncpg.Pool) -> None:
    sku = new_sku()
    await set_stock(pool, sku, 1)
    rejected, failed = new_order(), new_order()
    await deliver(pool, order_created(rejected, (sku, 5)))
    await deliver(pool, order_created(failed, (sku, 1)))
    await deliver(pool, payment_failed(failed))
    for order in (rejected, failed):
        await deliver(pool, order_cancelled(order))
    assert await state(pool, rejected) == "rejected"
    assert await state(pool, failed) == "released"
    assert await emitted(pool, rejected) == ["InventoryRejected"]
    assert await emitted(pool, failed) == ["InventoryReserved", "InventoryReleased"]
    assert await stock(pool, sku) == (1, 0, 0, 1)
    await audit(pool, [sku])


async def test_payment_for_an_unknown_order_does_nothing(pool: asyncpg.Pool) -> None:
    order = new_order()
    await deliver(pool, payment_succeeded(order))
    await deliver(pool, payment_failed(order))
    assert await state(pool, order) is None
    assert await emitted(pool, order) == []


async def test_cancel_with_no_reason_still_says_why(pool: asyncpg.Pool) -> None:
    sku, order = new_sku(), new_order()
    await set_stock(pool, sku, 1)
    await deliver(pool, order_created(order, (sku, 1)))
    await deliver(pool, order_cancelled(order, "  "))
    [_, released] = await emitted_payloads(pool, order)
    assert released == inventory_events_pb2.InventoryReleased(
        order_id=order, reason="order cancelled"
    )


# --- malformed events: raise (the consumer retries, then dead-letters), write nothing ----------


def _malformed() -> list[tuple[str, order_events_pb2.OrderCreated]]:
    sku = "SAGA-MALFORMED"
    good = order_created(new_order(), (sku, 1))
    cases = []
    for name, change in [
        ("no-lines", lambda e: e.ClearField("lines")),
        ("zero-quantity", lambda e: setattr(e.lines[0], "quantity", 0)),
        ("negative-quantity", lambda e: setattr(e.lines[0], "quantity", -3)),
        ("bad-sku", lambda e: setattr(e.lines[0], "sku", "bad sku")),
        ("no-user", lambda e: setattr(e, "user_id", "")),
        ("no-total", lambda e: e.ClearField("total")),
        ("bad-order-id", lambda e: setattr(e, "order_id", "not-a-uuid")),
    ]:
        event = order_events_pb2.OrderCreated()
        event.CopyFrom(good)
        event.order_id = new_order()
        change(event)
        cases.append((name, event))
    return cases


@pytest.mark.parametrize("payload", [pytest.param(p, id=n) for n, p in _malformed()])
async def test_malformed_order_created_raises_and_writes_nothing(
    pool: asyncpg.Pool, payload: order_events_pb2.OrderCreated
) -> None:
    await set_stock(pool, "SAGA-MALFORMED", 10)
    before = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM reservations) AS r, (SELECT count(*) FROM outbox) AS o,"
        " (SELECT count(*) FROM reservation_lines) AS l"
    )
    with pytest.raises(InvalidArgument):
        await deliver(pool, payload)
    after = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM reservations) AS r, (SELECT count(*) FROM outbox) AS o,"
        " (SELECT count(*) FROM reservation_lines) AS l"
    )
    assert after == before
    assert await stock(pool, "SAGA-MALFORMED") == (10, 0, 0, 10)


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
        async with InventoryUnitOfWork(pool) as uow:
            if row_locks:
                assert SUBSCRIPTIONS.row_locks is not None
                await SUBSCRIPTIONS.row_locks(uow, events)
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


async def deliver_merged(pool: asyncpg.Pool, payloads: Sequence[Message]) -> None:
    """One run of OrderCreated in one unit of work, as the consumer hands it over."""
    async with InventoryUnitOfWork(pool) as uow:
        await SUBSCRIPTIONS.batch_handlers["shop.events.v1.OrderCreated"](
            uow, [event_of(p) for p in payloads]
        )


async def test_merged_run_sells_exactly_the_stock_first_come_first_served(
    pool: asyncpg.Pool,
) -> None:
    sku = new_sku()
    await set_stock(pool, sku, 20)
    orders = [new_order() for _ in range(200)]
    await deliver_merged(pool, [order_created(o, (sku, 1)) for o in orders])

    assert [await state(pool, o) for o in orders[:21]] == ["reserved"] * 20 + ["rejected"]
    assert await state_counts(pool, orders) == {"reserved": 20, "rejected": 180}
    assert await stock(pool, sku) == (0, 20, 0, 20)
    assert await emitted(pool, orders[0]) == ["InventoryReserved"]
    assert await emitted(pool, orders[-1]) == ["InventoryRejected"]
    await audit(pool, [sku])


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


async def test_merged_run_redelivered_changes_nothing(pool: asyncpg.Pool) -> None:
    sku = new_sku()
    await set_stock(pool, sku, 3)
    payloads: list[Message] = [order_created(new_order(), (sku, 1)) for _ in range(5)]
    await deliver_merged(pool, payloads)
    before = await stock(pool, sku)
    outbox_rows = await pool.fetchval("SELECT count(*) FROM outbox")
    await deliver_merged(pool, payloads)
    assert await stock(pool, sku) == before == (0, 3, 0, 3)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == outbox_rows


async def test_concurrent_merged_runs_never_oversell(pool: asyncpg.Pool) -> None:
    sku = new_sku()
    await set_stock(pool, sku, 50)
    runs = [[order_created(new_order(), (sku, 1)) for _ in range(40)] for _ in range(10)]
    await asyncio.gather(*(deliver_merged(pool, run) for run in runs))
    orders = [p.order_id for run in runs for p in run]
    assert await state_counts(pool, orders) == {"reserved": 50, "rejected": 350}
    assert await stock(pool, sku) == (0, 50, 0, 50)
    await audit(pool, [sku])

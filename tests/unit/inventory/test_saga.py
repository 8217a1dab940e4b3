"""Inventory's part in the order saga, event by event, on the fake unit of work.

Reserve or reject (all lines or none), commit or release, compensation and
tombstones; events out of order, redelivered or malformed are in
test_saga_delivery.py. Every test ends with the saga audit's invariants.
"""

from __future__ import annotations

import uuid

import pytest

from services.inventory.domain import Line, ReservationState
from shared.messaging.topics import INVENTORY
from shop.events.v1 import inventory_events_pb2
from tests.support.inventory_events import (
    TOTAL,
    USER_ID,
    new_order,
    order_cancelled,
    order_created,
    payment_failed,
    payment_succeeded,
)
from tests.unit.inventory.fakes import FakeInventoryUnitOfWork
from tests.unit.inventory.saga import (
    audit,
    deliver,
    published,
    published_types,
    set_stock,
    state,
    stock,
)

S = ReservationState


# --- reserve or reject ----------------------------------------------------------------------------


async def test_reserve_holds_the_units_and_announces_them(uow: FakeInventoryUnitOfWork) -> None:
    order = new_order()
    await set_stock(uow, "AA-1", 10)
    await deliver(uow, order_created(order, ("AA-1", 3)))

    assert stock(uow, "AA-1") == (7, 3, 0, 10)
    assert state(uow, order) is S.RESERVED
    [(topic, publication)] = uow.published
    assert (topic, publication.key) == (INVENTORY, order)
    assert publication.message == inventory_events_pb2.InventoryReserved(
        order_id=order, user_id=USER_ID, total=TOTAL
    )
    audit(uow)


async def test_a_multi_line_order_holds_one_line_per_sku(uow: FakeInventoryUnitOfWork) -> None:
    for sku in ("AA", "BB", "CC"):
        await set_stock(uow, sku, 5)
    order = new_order()
    await deliver(uow, order_created(order, ("CC", 1), ("AA", 2), ("BB", 5), ("AA", 3)))

    assert [stock(uow, s) for s in ("AA", "BB", "CC")] == [(0, 5, 0, 5), (0, 5, 0, 5), (4, 1, 0, 5)]
    async with uow:
        reservation = await uow.reservations.get(uuid.UUID(order))
    assert reservation is not None
    assert reservation.lines == (Line("AA", 5), Line("BB", 5), Line("CC", 1))
    assert reservation.total is not None and reservation.total.amount_minor == 4200
    assert published_types(uow, order) == ["InventoryReserved"]
    audit(uow)


@pytest.mark.parametrize(
    ("available", "short"),
    [
        ({"AA": 10, "BB": 1, "CC": 10}, "BB"),
        ({"AA": 10, "BB": 0, "CC": 0}, "BB"),  # the first short SKU in SKU order is named
        ({"AA": 1, "BB": 10, "CC": 10}, "AA"),
        ({"AA": 10, "BB": 10}, "CC"),  # an unknown SKU has no stock at all
    ],
)
async def test_a_short_line_rejects_the_whole_order(
    uow: FakeInventoryUnitOfWork, available: dict[str, int], short: str
) -> None:
    for sku, units in available.items():
        await set_stock(uow, sku, units)
    order = new_order()
    await deliver(uow, order_created(order, ("CC", 2), ("BB", 2), ("AA", 2)))

    assert {sku: stock(uow, sku) for sku in available} == {
        sku: (units, 0, 0, units) for sku, units in available.items()
    }
    assert state(uow, order) is S.REJECTED
    assert uow.tables.reservations[uuid.UUID(order)].reason == f"out of stock: {short}"
    assert published(uow, order) == [
        inventory_events_pb2.InventoryRejected(order_id=order, sku=short, reason="out of stock")
    ]
    audit(uow)


async def test_exactly_the_available_units_can_be_reserved(uow: FakeInventoryUnitOfWork) -> None:
    first, second, third = new_order(), new_order(), new_order()
    await set_stock(uow, "AA", 3)
    await deliver(uow, order_created(first, ("AA", 3)), order_created(second, ("AA", 1)))
    await set_stock(uow, "AA", 1)
    await deliver(uow, order_created(third, ("AA", 1)))

    assert [state(uow, o) for o in (first, second, third)] == [S.RESERVED, S.REJECTED, S.RESERVED]
    assert stock(uow, "AA") == (0, 4, 0, 4)
    audit(uow)


# --- commit or release ----------------------------------------------------------------------------


async def test_payment_commits_the_held_units(uow: FakeInventoryUnitOfWork) -> None:
    order = new_order()
    await set_stock(uow, "AA", 10)
    await deliver(uow, order_created(order, ("AA", 3)), payment_succeeded(order))

    assert stock(uow, "AA") == (7, 0, 3, 10)
    assert state(uow, order) is S.COMMITTED
    assert published(uow, order)[1:] == [inventory_events_pb2.InventoryCommitted(order_id=order)]
    audit(uow)


async def test_a_failed_payment_releases_the_held_units(uow: FakeInventoryUnitOfWork) -> None:
    order = new_order()
    await set_stock(uow, "AA", 4)
    await deliver(uow, order_created(order, ("AA", 4)), payment_failed(order))

    assert stock(uow, "AA") == (4, 0, 0, 4)
    assert state(uow, order) is S.RELEASED
    assert published(uow, order)[1:] == [
        inventory_events_pb2.InventoryReleased(order_id=order, reason="payment failed")
    ]
    audit(uow)


# --- compensation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("paid", [False, True], ids=["reserved", "committed"])
async def test_cancel_releases_held_or_sold_units(uow: FakeInventoryUnitOfWork, paid: bool) -> None:
    order = new_order()
    await set_stock(uow, "AA", 5)
    await deliver(uow, order_created(order, ("AA", 2)))
    if paid:
        await deliver(uow, payment_succeeded(order))
        assert stock(uow, "AA") == (3, 0, 2, 5)
    await deliver(uow, order_cancelled(order, "saga timeout"))

    assert stock(uow, "AA") == (5, 0, 0, 5)
    assert state(uow, order) is S.RELEASED
    assert published(uow, order)[-1] == inventory_events_pb2.InventoryReleased(
        order_id=order, reason="saga timeout"
    )
    audit(uow)


async def test_cancel_before_the_order_leaves_a_tombstone_every_later_event_respects(
    uow: FakeInventoryUnitOfWork,
) -> None:
    order = new_order()
    await set_stock(uow, "AA", 5)
    await deliver(uow, order_cancelled(order, "saga timeout"))
    tombstone = uow.tables.reservations[uuid.UUID(order)]
    assert (tombstone.state, tombstone.reason, tombstone.total) == (
        S.CANCELLED,
        "saga timeout",
        None,
    )

    await deliver(
        uow,
        order_created(order, ("AA", 2)),  # arrives late: holds nothing
        payment_succeeded(order),
        payment_failed(order),
        order_cancelled(order, "again"),
    )
    assert state(uow, order) is S.CANCELLED
    assert uow.tables.reservations[uuid.UUID(order)].lines == {}
    assert stock(uow, "AA") == (5, 0, 0, 5)
    assert uow.published == []
    audit(uow)


async def test_payments_after_a_cancel_change_nothing(uow: FakeInventoryUnitOfWork) -> None:
    order = new_order()
    await set_stock(uow, "AA", 5)
    await deliver(uow, order_created(order, ("AA", 3)), order_cancelled(order))
    # Payment refunds a charge that raced the cancellation on its own.
    await deliver(uow, payment_succeeded(order), payment_failed(order))
    assert state(uow, order) is S.RELEASED
    assert stock(uow, "AA") == (5, 0, 0, 5)
    assert published_types(uow, order) == ["InventoryReserved", "InventoryReleased"]
    audit(uow)


async def test_a_late_payment_failure_does_not_undo_a_sale(uow: FakeInventoryUnitOfWork) -> None:
    order = new_order()
    await set_stock(uow, "AA", 5)
    await deliver(uow, order_created(order, ("AA", 5)), payment_succeeded(order))
    await deliver(uow, payment_failed(order))
    assert state(uow, order) is S.COMMITTED
    assert stock(uow, "AA") == (0, 0, 5, 5)
    assert published_types(uow, order) == ["InventoryReserved", "InventoryCommitted"]


async def test_cancel_after_a_rejection_or_a_failure_does_nothing(
    uow: FakeInventoryUnitOfWork,
) -> None:
    rejected, failed = new_order(), new_order()
    await set_stock(uow, "AA", 1)
    await deliver(uow, order_created(rejected, ("AA", 5)), order_created(failed, ("AA", 1)))
    await deliver(uow, payment_failed(failed), order_cancelled(rejected), order_cancelled(failed))
    assert (state(uow, rejected), state(uow, failed)) == (S.REJECTED, S.RELEASED)
    assert published_types(uow, rejected) == ["InventoryRejected"]
    assert published_types(uow, failed) == ["InventoryReserved", "InventoryReleased"]
    assert stock(uow, "AA") == (1, 0, 0, 1)
    audit(uow)


async def test_payments_for_an_unknown_order_do_nothing(uow: FakeInventoryUnitOfWork) -> None:
    order = new_order()
    await deliver(uow, payment_succeeded(order), payment_failed(order))
    assert state(uow, order) is None
    assert uow.published == []


@pytest.mark.parametrize(
    ("reason", "said"), [("  ", "order cancelled"), ("x" * 600, "x" * 500), (" late ", "late")]
)
async def test_a_release_always_says_why_within_bounds(
    uow: FakeInventoryUnitOfWork, reason: str, said: str
) -> None:
    order = new_order()
    await set_stock(uow, "AA", 1)
    await deliver(uow, order_created(order, ("AA", 1)), order_cancelled(order, reason))
    assert published(uow, order)[-1] == inventory_events_pb2.InventoryReleased(
        order_id=order, reason=said
    )
    assert uow.tables.reservations[uuid.UUID(order)].reason == said

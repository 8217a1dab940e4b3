"""What inventory subscribes to, and the stock rows a batch locks before its events run."""

from __future__ import annotations

import uuid
from typing import cast

from google.protobuf.message import Message

from services.inventory import use_cases
from services.inventory.domain import ReservationState
from services.inventory.persistence import PostgresInventoryUnitOfWork
from services.inventory.subscriptions import SUBSCRIPTIONS
from shared.messaging.topics import ORDERS, PAYMENTS
from tests.support.inventory_events import (
    event_of,
    new_order,
    order_cancelled,
    order_created,
    payment_failed,
    payment_succeeded,
)
from tests.unit.inventory.fakes import FakeInventoryUnitOfWork
from tests.unit.inventory.saga import deliver, published_types, set_stock, state


def test_inventory_reads_the_order_and_payment_topics() -> None:
    assert SUBSCRIPTIONS.topics == [ORDERS, PAYMENTS]
    assert set(SUBSCRIPTIONS.handlers) == {
        "shop.events.v1.OrderCreated",
        "shop.events.v1.OrderCancelled",
        "shop.events.v1.PaymentSucceeded",
        "shop.events.v1.PaymentFailed",
    }
    assert set(SUBSCRIPTIONS.batch_handlers) == {"shop.events.v1.OrderCreated"}
    assert SUBSCRIPTIONS.row_locks is use_cases.lock_stock


async def test_a_saga_through_the_subscriptions_as_the_consumer_calls_them(
    uow: FakeInventoryUnitOfWork,
) -> None:
    # The consumer's units of work are PostgreSQL ones; the use cases behind the
    # subscriptions take any unit of work, so the fake stands in for it here.
    consumer_uow = cast(PostgresInventoryUnitOfWork, uow)
    lock_rows = SUBSCRIPTIONS.lock_rows()
    assert lock_rows is not None
    sold, released = new_order(), new_order()
    await set_stock(uow, "AA", 5)
    created = [
        event_of(order_created(sold, ("AA", 1))),
        event_of(order_created(released, ("AA", 2))),
    ]
    async with uow:
        await lock_rows(consumer_uow, created)
        await SUBSCRIPTIONS.handlers["shop.events.v1.OrderCreated"](consumer_uow, created[0])
        await SUBSCRIPTIONS.batch_handlers["shop.events.v1.OrderCreated"](consumer_uow, created[1:])
    for message in (payment_succeeded(sold), payment_failed(released), order_cancelled(released)):
        async with uow:
            event = event_of(message)
            await SUBSCRIPTIONS.handlers[event.type](consumer_uow, event)
    assert uow.locked == [["AA"]]
    assert (state(uow, sold), state(uow, released)) == (
        ReservationState.COMMITTED,
        ReservationState.RELEASED,
    )
    assert published_types(uow, released) == ["InventoryReserved", "InventoryReleased"]


async def test_a_batch_locks_every_stock_row_it_will_change_once_in_sku_order(
    uow: FakeInventoryUnitOfWork,
) -> None:
    for sku in ("AA", "BB", "CC", "DD", "EE"):
        await set_stock(uow, sku, 10)
    paid, cancelled = new_order(), new_order()
    await deliver(
        uow, order_created(paid, ("EE", 1), ("BB", 1)), order_created(cancelled, ("DD", 1))
    )
    batch: list[Message] = [
        order_created(new_order(), ("CC", 1), ("NEW-SKU", 1)),  # no row yet: nothing to lock
        payment_succeeded(paid),
        order_cancelled(cancelled),
        payment_failed(new_order()),  # no reservation: nothing to lock
        payment_succeeded("not-a-uuid"),  # its use case refuses it, not the locks
        order_created(new_order(), ("AA", 1)),
    ]
    async with uow:
        await use_cases.lock_stock(uow, batch)
    assert uow.locked == [["AA", "BB", "CC", "DD", "EE"]]


async def test_a_batch_of_nothing_lockable_locks_nothing(uow: FakeInventoryUnitOfWork) -> None:
    async with uow:
        await use_cases.lock_stock(uow, [payment_failed(str(uuid.uuid4()))])
    assert uow.locked == [[]]

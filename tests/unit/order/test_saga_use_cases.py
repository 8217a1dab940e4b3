"""The order's saga use cases on the in-memory unit of work (tests/unit/order/fakes.py):
the outcomes inventory and payment decide, in any order and more than once, and the
saga timeout. No database, no Kafka: the handlers get the unpacked event message, as
the consumer hands it to them."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from google.protobuf.message import Message

from services.order import use_cases
from services.order.domain import SAGA_TIMED_OUT, Order, OrderStatus
from services.order.publishing import order_cancelled, order_created
from services.order.subscriptions import SUBSCRIPTIONS
from shared.errors import InvalidArgument, Unavailable
from shared.messaging.envelope import Event, wrap
from shop.events.v1 import inventory_events_pb2, payment_events_pb2
from tests.unit.order.fakes import CUSTOMER, FakeOrderUnitOfWork, RowLockWouldWait, World


def committed(order_id: str) -> Message:
    return inventory_events_pb2.InventoryCommitted(order_id=order_id)


def rejected(order_id: str) -> Message:
    return inventory_events_pb2.InventoryRejected(order_id=order_id, sku="SKU-7", reason="short")


def payment_failed(order_id: str) -> Message:
    return payment_events_pb2.PaymentFailed(order_id=order_id, reason="insufficient funds")


OUTCOMES = {"InventoryCommitted": committed, "InventoryRejected": rejected}
OUTCOMES["PaymentFailed"] = payment_failed


async def deliver(uow: FakeOrderUnitOfWork, *messages: Message) -> None:
    """The messages in one transaction, through the subscriptions, as the consumer does."""
    async with uow() as open_uow:
        for message in messages:
            event = Event(envelope=wrap(message, "key"), payload=message)
            await SUBSCRIPTIONS.handlers[event.type](open_uow, event)


@pytest.fixture
def world() -> World:
    return World.new()


# --- settling ----------------------------------------------------------------------------


async def test_inventory_committed_confirms_once(world: World) -> None:
    order = await world.place()
    await deliver(world.uow, committed(str(order.order_id)))
    confirmed = world.stored(order.order_id)
    assert (confirmed.status, confirmed.status_reason) == (OrderStatus.CONFIRMED, "")
    assert confirmed.items == order.items and confirmed.total == order.total
    await deliver(world.uow, committed(str(order.order_id)))  # redelivered
    assert world.stored(order.order_id) == confirmed  # not even updated_at moved
    assert world.uow.messages == [order_created(order)]  # confirming announces nothing


async def test_inventory_rejected_names_the_sku(world: World) -> None:
    order = await world.place()
    await deliver(world.uow, rejected(str(order.order_id)))
    got = world.stored(order.order_id)
    assert (got.status, got.status_reason) == (OrderStatus.REJECTED, "out of stock: SKU-7")
    assert world.uow.messages == [order_created(order)]  # inventory holds nothing to release


async def test_payment_failed_cancels_with_the_reason(world: World) -> None:
    order = await world.place()
    await deliver(world.uow, payment_failed(str(order.order_id)))
    got = world.stored(order.order_id)
    assert got.status is OrderStatus.CANCELLED
    assert got.status_reason == "payment failed: insufficient funds"
    # Inventory releases on PaymentFailed itself; no OrderCancelled is needed.
    assert world.uow.messages == [order_created(order)]


FINAL_BY = {"InventoryCommitted": "confirmed", "InventoryRejected": "rejected"}
FINAL_BY["PaymentFailed"] = "cancelled"


@pytest.mark.parametrize("late", list(OUTCOMES))
@pytest.mark.parametrize("first", list(OUTCOMES))
async def test_the_first_outcome_wins_and_later_ones_change_nothing(
    world: World, first: str, late: str
) -> None:
    order = await world.place()
    await deliver(world.uow, OUTCOMES[first](str(order.order_id)))
    settled = world.stored(order.order_id)
    assert settled.status == FINAL_BY[first]
    await deliver(world.uow, OUTCOMES[late](str(order.order_id)))
    assert world.stored(order.order_id) == settled
    assert world.uow.messages == [order_created(order)]


async def test_a_late_outcome_after_the_customer_cancelled_changes_nothing(
    world: World,
) -> None:
    """Inventory un-sells on OrderCancelled; the order stays cancelled."""
    order = await world.place()
    cancelled = await use_cases.cancel(world.uow, str(order.order_id), CUSTOMER.user_id)
    await deliver(world.uow, committed(str(order.order_id)))
    await deliver(world.uow, payment_failed(str(order.order_id)))
    assert world.stored(order.order_id) == cancelled
    assert world.uow.messages == [order_created(order), order_cancelled(cancelled)]


async def test_one_batch_settles_several_orders_duplicates_included(world: World) -> None:
    a, b, c = [await world.place() for _ in range(3)]
    commits = world.uow.commits
    await deliver(
        world.uow,
        committed(str(a.order_id)),
        rejected(str(b.order_id)),
        committed(str(a.order_id)),  # a second event for a, same batch
        payment_failed(str(c.order_id)),
        committed(str(c.order_id)),
    )
    assert [world.stored(o.order_id).status for o in (a, b, c)] == [
        OrderStatus.CONFIRMED,
        OrderStatus.REJECTED,
        OrderStatus.CANCELLED,
    ]
    assert world.uow.commits == commits + 1


@pytest.mark.parametrize("outcome", list(OUTCOMES))
async def test_an_outcome_for_an_unknown_order_is_ignored(world: World, outcome: str) -> None:
    await deliver(world.uow, OUTCOMES[outcome](str(uuid.uuid4())))  # does not raise
    assert world.uow.orders.rows == {} and world.uow.rollbacks == 0


@pytest.mark.parametrize("order_id", ["not-an-order-id", ""], ids=["malformed", "missing"])
@pytest.mark.parametrize("outcome", list(OUTCOMES))
async def test_an_unreadable_order_id_raises_for_the_dead_letter_topic(
    world: World, outcome: str, order_id: str
) -> None:
    order = await world.place()
    with pytest.raises(InvalidArgument) as caught:
        await deliver(world.uow, committed(str(order.order_id)), OUTCOMES[outcome](order_id))
    assert caught.value.field == "order_id"
    # The whole batch rolled back: the consumer retries it, then dead-letters the event.
    assert world.stored(order.order_id) == order and world.uow.rollbacks == 1


async def test_settling_locks_the_order(world: World) -> None:
    """CancelOrder or the saga timeout may be deciding: the handler waits for them."""
    order = await world.place()
    world.uow.orders.held_elsewhere.add(order.order_id)
    with pytest.raises(RowLockWouldWait):
        await deliver(world.uow, committed(str(order.order_id)))


# --- the saga timeout -------------------------------------------------------------------

TIMEOUT, CEILING = 30.0, 600.0


async def cancel_overdue(world: World, limit: int = 50) -> int:
    return await use_cases.cancel_overdue(
        world.uow, timeout_seconds=TIMEOUT, ceiling_seconds=CEILING, limit=limit
    )


async def test_overdue_orders_are_cancelled_and_announced(world: World) -> None:
    overdue = [await world.place() for _ in range(3)]
    settled = await world.place()
    await deliver(world.uow, committed(str(settled.order_id)))
    world.uow.clock.advance(TIMEOUT + 1)
    fresh = await world.place()  # placed at the clock's new value: not due yet
    assert await cancel_overdue(world) == 3
    cancelled = [world.stored(o.order_id) for o in overdue]
    assert {(o.status, o.status_reason) for o in cancelled} == {
        (OrderStatus.CANCELLED, SAGA_TIMED_OUT)
    }
    assert world.stored(fresh.order_id).status is OrderStatus.PENDING
    assert world.stored(settled.order_id).status is OrderStatus.CONFIRMED
    placed = [order_created(o) for o in [*overdue, settled, fresh]]
    assert world.uow.messages == placed + [order_cancelled(o) for o in cancelled]
    # The cancellations join each order's own trace.
    assert world.uow.traces == [("saga timeout cancels the order", [o.order_id for o in overdue])]
    assert await cancel_overdue(world) == 0  # done: nothing twice


async def test_without_the_saga_clock_the_wall_clock_ceiling_still_ends_an_order(
    world: World,
) -> None:
    order = await world.place()
    world.uow.clock.advance(CEILING - 1, saga_moves=False)  # the saga could not move
    assert await cancel_overdue(world) == 0
    world.uow.clock.advance(2, saga_moves=False)
    assert await cancel_overdue(world) == 1
    assert world.stored(order.order_id).status_reason == SAGA_TIMED_OUT


async def test_a_batch_takes_the_oldest_and_skips_orders_another_holds(world: World) -> None:
    orders = [await world.place() for _ in range(5)]
    for age, order in enumerate(orders):  # orders[0] the newest
        world.uow.orders.rows[order.order_id] = replace(
            order, created_at=order.created_at - timedelta(seconds=age)
        )
    world.uow.orders.held_elsewhere.add(orders[4].order_id)  # SKIP LOCKED
    world.uow.clock.advance(TIMEOUT + 1)
    assert await cancel_overdue(world, limit=2) == 2
    assert [world.stored(o.order_id).status for o in orders] == [
        OrderStatus.PENDING,
        OrderStatus.PENDING,
        OrderStatus.CANCELLED,
        OrderStatus.CANCELLED,
        OrderStatus.PENDING,
    ]


async def test_a_failed_batch_cancels_and_announces_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = [await world.place() for _ in range(3)]
    world.uow.clock.advance(TIMEOUT + 1)
    save = world.uow.orders.save
    saved: list[Order] = []

    async def outage_on_the_second_save(order: Order) -> None:
        if saved:
            raise Unavailable("the database went away")
        saved.append(order)
        await save(order)

    monkeypatch.setattr(world.uow.orders, "save", outage_on_the_second_save)
    with pytest.raises(Unavailable):
        await cancel_overdue(world)
    assert saved  # the first was saved, then rolled back with the rest
    assert all(world.stored(o.order_id) == o for o in orders)
    assert world.uow.messages == [order_created(o) for o in orders]
    assert await cancel_overdue(world) == 3  # the next round does them all

"""The order's side of the saga, without I/O: what each event and each cancel does to an
order in each status, the events the order publishes, and the WatchOrder hub's bookkeeping."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from services.order.adapters.watch_hub import OrderStatusHub, ShuttingDown
from services.order.domain import (
    CANCELLED_BY_CUSTOMER,
    MAX_REASON,
    SAGA_TIMED_OUT,
    CatalogEntry,
    Order,
    OrderStatus,
    OrderStep,
    SagaOutcome,
    cancel_by_customer,
    inventory_committed,
    inventory_rejected,
    order_request,
    payment_failed,
    place_order,
    settle,
    time_out,
)
from services.order.publishing import order_cancelled, order_created
from services.order.subscriptions import SUBSCRIPTIONS
from shared.errors import FailedPrecondition
from shared.messaging.envelope import topic_of
from shared.messaging.topics import INVENTORY, PAYMENTS
from shared.money import Money
from shop.common.v1 import money_pb2
from shop.events.v1 import inventory_events_pb2, order_events_pb2, payment_events_pb2

USER = uuid.uuid4()


def pending_order(*quantities: int) -> Order:
    entries = [
        CatalogEntry(uuid.uuid4(), f"SKU-{i}", Money(100 * (i + 1), "EUR"), True)
        for i in range(len(quantities) or 1)
    ]
    request = order_request(
        "key", [(str(e.product_id), q) for e, q in zip(entries, quantities or (1,), strict=True)]
    )
    return place_order(user_id=USER, request=request, catalog={e.product_id: e for e in entries})


def in_status(status: OrderStatus) -> Order:
    order = pending_order()
    if status is OrderStatus.PENDING:
        return order
    return order.transition(status, "" if status is OrderStatus.CONFIRMED else "earlier")


# --- every trigger of the saga against every status ---------------------------------------


@dataclass(frozen=True)
class Trigger:
    name: str
    apply: Callable[[Order], Order | None]
    # What a PENDING order becomes.
    status: OrderStatus
    reason: str


TRIGGERS = [
    Trigger(
        "InventoryCommitted", lambda o: settle(o, inventory_committed()), OrderStatus.CONFIRMED, ""
    ),
    Trigger(
        "InventoryRejected",
        lambda o: settle(o, inventory_rejected("SKU-7")),
        OrderStatus.REJECTED,
        "out of stock: SKU-7",
    ),
    Trigger(
        "PaymentFailed",
        lambda o: settle(o, payment_failed("insufficient funds")),
        OrderStatus.CANCELLED,
        "payment failed: insufficient funds",
    ),
    Trigger("CancelOrder", cancel_by_customer, OrderStatus.CANCELLED, CANCELLED_BY_CUSTOMER),
    Trigger("saga timeout", time_out, OrderStatus.CANCELLED, SAGA_TIMED_OUT),
]
FINAL = [OrderStatus.CONFIRMED, OrderStatus.REJECTED, OrderStatus.CANCELLED]


@pytest.mark.parametrize("trigger", TRIGGERS, ids=[t.name for t in TRIGGERS])
def test_a_pending_order_is_settled(trigger: Trigger) -> None:
    order = pending_order()
    moved = trigger.apply(order)
    assert moved is not None
    assert (moved.status, moved.status_reason) == (trigger.status, trigger.reason)
    assert moved.is_final
    assert moved.order_id == order.order_id and moved.items == order.items
    assert moved.updated_at >= order.updated_at
    assert order.status is OrderStatus.PENDING  # the original is untouched


EVENTS = TRIGGERS[:3]


@pytest.mark.parametrize("status", FINAL)
@pytest.mark.parametrize("trigger", EVENTS, ids=[t.name for t in EVENTS])
def test_an_event_for_a_final_order_changes_nothing(trigger: Trigger, status: OrderStatus) -> None:
    """Redeliveries and the losers of a race are ignored, never an error."""
    assert trigger.apply(in_status(status)) is None


def test_the_first_outcome_wins() -> None:
    confirmed = settle(pending_order(), inventory_committed())
    assert confirmed is not None
    assert settle(confirmed, payment_failed("late")) is None
    assert settle(confirmed, inventory_committed()) is None  # redelivered


def test_cancelling_a_cancelled_order_returns_it_unchanged() -> None:
    for reason in (CANCELLED_BY_CUSTOMER, "payment failed: declined", SAGA_TIMED_OUT):
        cancelled = pending_order().cancel(reason)
        assert cancel_by_customer(cancelled) is cancelled


@pytest.mark.parametrize("status", [OrderStatus.CONFIRMED, OrderStatus.REJECTED])
def test_a_confirmed_or_rejected_order_cannot_be_cancelled(status: OrderStatus) -> None:
    order = in_status(status)
    with pytest.raises(FailedPrecondition, match=f"is {status}; only a pending order"):
        cancel_by_customer(order)


@pytest.mark.parametrize("status", FINAL)
def test_the_timeout_only_cancels_pending_orders(status: OrderStatus) -> None:
    with pytest.raises(FailedPrecondition):
        time_out(in_status(status))


# --- reasons built from other services' text never make a transition fail ----------------


def test_outcomes_of_the_events() -> None:
    assert inventory_committed() == SagaOutcome(OrderStatus.CONFIRMED)
    assert inventory_rejected("ABC-1") == SagaOutcome(OrderStatus.REJECTED, "out of stock: ABC-1")
    # Payment charges only a reserved order: a failed payment shows the order got that far.
    assert payment_failed("card declined") == SagaOutcome(
        OrderStatus.CANCELLED, "payment failed: card declined", OrderStep.RESERVED
    )


@pytest.mark.parametrize(
    "outcome",
    [
        inventory_rejected(""),
        inventory_rejected("   "),
        payment_failed(""),
        payment_failed("x" * 5000),
    ],
    ids=["no sku", "blank sku", "no reason", "huge reason"],
)
def test_odd_event_text_still_settles_the_order(outcome: SagaOutcome) -> None:
    settled = settle(pending_order(), outcome)
    assert settled is not None and settled.status is outcome.status
    assert 0 < len(settled.status_reason) <= MAX_REASON


def test_empty_detail_reads_unknown() -> None:
    assert inventory_rejected("").reason == "out of stock: unknown"
    assert payment_failed(" ").reason == "payment failed: unknown"


# --- what the order publishes --------------------------------------------------------------


def test_order_created_carries_the_lines_and_total() -> None:
    order = pending_order(3, 1)
    event = order_created(order)
    assert event == order_events_pb2.OrderCreated(
        order_id=str(order.order_id),
        user_id=str(USER),
        lines=[
            order_events_pb2.OrderLine(sku="SKU-0", quantity=3),
            order_events_pb2.OrderLine(sku="SKU-1", quantity=1),
        ],
        total=money_pb2.Money(amount_minor=3 * 100 + 1 * 200, currency="EUR"),
    )


def test_order_cancelled_carries_the_reason() -> None:
    order = cancel_by_customer(pending_order())
    assert order_cancelled(order) == order_events_pb2.OrderCancelled(
        order_id=str(order.order_id), user_id=str(USER), reason=CANCELLED_BY_CUSTOMER
    )


# --- what the order listens to -------------------------------------------------------------


def test_subscriptions_are_the_two_steps_and_the_three_settling_events() -> None:
    assert list(SUBSCRIPTIONS.topics) == [INVENTORY, PAYMENTS]
    assert set(SUBSCRIPTIONS.handlers) == {
        "shop.events.v1.InventoryReserved",
        "shop.events.v1.PaymentSucceeded",
        "shop.events.v1.InventoryCommitted",
        "shop.events.v1.InventoryRejected",
        "shop.events.v1.PaymentFailed",
    }
    # Everything else on those topics is skipped by the consumer: it changes nothing here.
    on_those_topics = {
        message.full_name
        for module in (inventory_events_pb2, payment_events_pb2)
        for message in module.DESCRIPTOR.message_types_by_name.values()
        if topic_of(message) in SUBSCRIPTIONS.topics
    }
    ignored = on_those_topics - set(SUBSCRIPTIONS.handlers)
    assert {"shop.events.v1.InventoryReleased", "shop.events.v1.PaymentRefunded"} == ignored


# --- the WatchOrder hub's bookkeeping (no connection needed) ------------------------------


async def test_a_watch_is_woken_only_by_its_own_order() -> None:
    hub = OrderStatusHub("postgresql://unused")
    mine, other = uuid.uuid4(), uuid.uuid4()
    with hub.watch(mine) as watch:
        hub.wake(str(other))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await watch.wait(0.05)  # nothing for us: waits the whole timeout
        assert loop.time() - started >= 0.04
        hub.wake(str(mine))
        started = loop.time()
        await watch.wait(5)
        assert loop.time() - started < 1
    assert hub.watcher_count == 0


async def test_watches_are_counted_and_removed() -> None:
    hub = OrderStatusHub("postgresql://unused")
    order_id = uuid.uuid4()
    with hub.watch(order_id), hub.watch(order_id), hub.watch(uuid.uuid4()):
        assert hub.watcher_count == 3
    assert hub.watcher_count == 0
    with pytest.raises(RuntimeError), hub.watch(order_id):
        raise RuntimeError("the stream failed")
    assert hub.watcher_count == 0


async def test_closing_the_hub_ends_every_watch() -> None:
    hub = OrderStatusHub("postgresql://unused")
    order_id = uuid.uuid4()
    with hub.watch(order_id) as watch:
        waiting = asyncio.create_task(watch.wait(60))
        await asyncio.sleep(0)
        await hub.close()
        with pytest.raises(ShuttingDown, match="reconnect"):
            await asyncio.wait_for(waiting, 1)
    with pytest.raises(ShuttingDown), hub.watch(order_id):
        pass  # a watch that starts after close is refused at once
    assert hub.watcher_count == 0
    await hub.close()  # twice is fine

"""Typed subscriptions (shared/messaging/subscriptions.py): the handler gets the unpacked
message, and the topics follow from the event types."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from shared.messaging.envelope import Event, wrap
from shared.messaging.subscriptions import Subscriptions, subscribe
from shared.messaging.topics import INVENTORY, ORDERS
from shop.events.v1 import envelope_pb2, inventory_events_pb2, order_events_pb2


def _event(
    payload: order_events_pb2.OrderCreated | inventory_events_pb2.InventoryReserved,
) -> Event:
    return Event(wrap(payload, payload.order_id), payload)


def run(awaitable: Awaitable[None]) -> None:
    async def wait() -> None:
        await awaitable

    asyncio.run(wait())


def test_handlers_receive_the_unpacked_message_and_topics_follow_the_types() -> None:
    seen: list[str] = []

    async def on_created(uow: list[str], created: order_events_pb2.OrderCreated) -> None:
        uow.append(created.order_id)

    async def on_reserved(uow: list[str], reserved: inventory_events_pb2.InventoryReserved) -> None:
        uow.append("reserved " + reserved.order_id)

    subscriptions: Subscriptions[list[str]] = Subscriptions(
        [
            subscribe(order_events_pb2.OrderCreated, on_created),
            subscribe(inventory_events_pb2.InventoryReserved, on_reserved),
        ]
    )
    assert subscriptions.topics == sorted([ORDERS, INVENTORY])
    created = order_events_pb2.OrderCreated(order_id="o-1")
    run(subscriptions.handlers["shop.events.v1.OrderCreated"](seen, _event(created)))
    assert seen == ["o-1"]
    assert subscriptions.batch_handlers == {} and subscriptions.preparers == {}


def test_a_batch_handler_and_a_preparer_get_messages() -> None:
    got: list[list[str]] = []

    async def one(uow: None, created: order_events_pb2.OrderCreated) -> None:
        raise AssertionError("the batch handler takes runs")

    async def many(uow: None, created: list[order_events_pb2.OrderCreated]) -> None:
        got.append([c.order_id for c in created])

    async def prepare(created: list[order_events_pb2.OrderCreated]) -> None:
        got.append(["prepared"] + [c.order_id for c in created])

    subscriptions: Subscriptions[None] = Subscriptions(
        [subscribe(order_events_pb2.OrderCreated, one, batch=many, prepare=prepare)]
    )
    events = [_event(order_events_pb2.OrderCreated(order_id=i)) for i in ("a", "b")]
    run(subscriptions.preparers["shop.events.v1.OrderCreated"](events))
    run(subscriptions.batch_handlers["shop.events.v1.OrderCreated"](None, events))
    assert got == [["prepared", "a", "b"], ["a", "b"]]


def test_a_message_that_is_no_event_cannot_be_subscribed() -> None:
    async def handler(uow: None, envelope: envelope_pb2.EventEnvelope) -> None:
        pass

    with pytest.raises(ValueError, match="is not an event"):
        subscribe(envelope_pb2.EventEnvelope, handler)


def test_one_type_subscribed_twice_is_refused() -> None:
    async def handler(uow: None, created: order_events_pb2.OrderCreated) -> None:
        pass

    with pytest.raises(ValueError, match="subscribed twice"):
        Subscriptions([subscribe(order_events_pb2.OrderCreated, handler)] * 2)


def test_a_payload_of_another_type_is_refused() -> None:
    async def handler(uow: None, created: order_events_pb2.OrderCreated) -> None:
        pass

    wrong = _event(inventory_events_pb2.InventoryReserved(order_id="x"))
    subscription = subscribe(order_events_pb2.OrderCreated, handler)
    with pytest.raises(TypeError):
        run(subscription.handle(None, wrong))

"""A topic carries only the events of the service that owns it: each event proto file names
its topic (shop/events/v1/topic.proto), and consumers refuse other types on it."""

from __future__ import annotations

from google.protobuf.message import Message

from ops.trust.rights import PUBLISHES
from shared.messaging.envelope import (
    event_catalog,
    event_topics,
    event_type,
    foreign_event,
    topic_of,
)
from shared.messaging.topics import DEADLETTER, INVENTORY, ORDERS, PAYMENTS
from shop.events.v1 import envelope_pb2, inventory_events_pb2, order_events_pb2, payment_events_pb2

SAGA_TOPICS = frozenset({ORDERS, INVENTORY, PAYMENTS})


def test_each_event_file_names_the_topic_its_owner_publishes() -> None:
    assert topic_of(order_events_pb2.OrderCreated) == ORDERS
    assert topic_of(inventory_events_pb2.InventoryReserved) == INVENTORY
    assert topic_of(payment_events_pb2.PaymentSucceeded) == PAYMENTS
    # Every type of a file shares its topic, and the topics are the ones the owners may write.
    files = (order_events_pb2, inventory_events_pb2, payment_events_pb2)
    topics = {
        topic_of(descriptor)
        for module in files
        for descriptor in module.DESCRIPTOR.message_types_by_name.values()
    }
    assert topics == set(PUBLISHES.values())


def test_the_catalog_holds_every_event_of_the_contract_and_nothing_else() -> None:
    assert event_topics() == SAGA_TOPICS
    assert "shop.events.v1.PaymentRefunded" in event_catalog()
    assert "shop.events.v1.EventEnvelope" not in event_catalog()


def test_the_envelope_is_no_event() -> None:
    assert topic_of(envelope_pb2.EventEnvelope) is None
    assert event_type("shop.events.v1.EventEnvelope") is None
    assert event_type("shop.events.v1.NoSuchEvent") is None
    assert event_type("shop.events.v1.OrderCreated") is order_events_pb2.OrderCreated


def test_a_type_its_owner_does_not_publish_is_refused_with_the_reason() -> None:
    def refused(topic: str, event: type[Message]) -> str | None:
        return foreign_event(topic, event)

    assert refused(ORDERS, order_events_pb2.OrderCreated) is None
    assert (
        refused(ORDERS, inventory_events_pb2.InventoryReserved)
        == "event type shop.events.v1.InventoryReserved is not published on shop.orders.v1"
    )
    assert refused(INVENTORY, order_events_pb2.OrderCreated) is not None
    assert refused(PAYMENTS, inventory_events_pb2.InventoryReserved) is not None


def test_a_topic_outside_the_saga_is_not_checked() -> None:
    reserved = inventory_events_pb2.InventoryReserved
    assert foreign_event(DEADLETTER, reserved) is None
    assert foreign_event("test.messaging.abc", reserved) is None

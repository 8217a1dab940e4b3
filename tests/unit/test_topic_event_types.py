"""A topic carries only the events of the service that owns it (shared/messaging/envelope.py)."""

from __future__ import annotations

from ops.trust.rights import PUBLISHES
from shared.messaging.envelope import EVENT_TYPES, TOPIC_EVENT_TYPES, foreign_event
from shared.messaging.topics import DEADLETTER, INVENTORY, ORDERS, PAYMENTS


def test_each_saga_topic_carries_its_owners_events_only() -> None:
    assert "shop.events.v1.OrderCreated" in TOPIC_EVENT_TYPES[ORDERS]
    assert "shop.events.v1.InventoryReserved" in TOPIC_EVENT_TYPES[INVENTORY]
    assert "shop.events.v1.PaymentSucceeded" in TOPIC_EVENT_TYPES[PAYMENTS]
    # Every event type belongs to exactly one topic.
    owners = {
        name: [t for t, types in TOPIC_EVENT_TYPES.items() if name in types] for name in EVENT_TYPES
    }
    assert all(len(topics) == 1 for topics in owners.values()), owners
    assert set(TOPIC_EVENT_TYPES) == set(PUBLISHES.values())


def test_a_type_its_owner_does_not_publish_is_refused_with_the_reason() -> None:
    assert foreign_event(ORDERS, "shop.events.v1.OrderCreated") is None
    assert (
        foreign_event(ORDERS, "shop.events.v1.InventoryReserved")
        == "event type shop.events.v1.InventoryReserved is not published on shop.orders.v1"
    )
    assert foreign_event(INVENTORY, "shop.events.v1.OrderCreated") is not None
    assert foreign_event(PAYMENTS, "shop.events.v1.InventoryReserved") is not None


def test_a_topic_outside_the_saga_is_not_checked() -> None:
    assert foreign_event(DEADLETTER, "shop.events.v1.InventoryReserved") is None
    assert foreign_event("test.messaging.abc", "shop.events.v1.InventoryReserved") is None

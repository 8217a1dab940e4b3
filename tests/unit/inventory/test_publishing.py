"""Each domain event as the message the saga reads on shop.inventory.v1, keyed by order id."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf.message import Message

from services.inventory.domain import (
    InventoryEvent,
    ReservationCommitted,
    ReservationRejected,
    ReservationReleased,
    StockReserved,
)
from services.inventory.publishing import publication
from shared.messaging.envelope import topic_of
from shared.messaging.topics import INVENTORY
from shared.money import Money
from shop.common.v1 import money_pb2
from shop.events.v1 import inventory_events_pb2 as pb

ORDER = uuid.UUID("8b1c7f4e-0a5e-4c1b-9d8e-2f3a4b5c6d7e")
USER = uuid.UUID("11111111-2222-4333-8444-555555555555")

CASES: list[tuple[InventoryEvent, Message]] = [
    (
        StockReserved(ORDER, USER, Money(4200, "EUR")),
        pb.InventoryReserved(
            order_id=str(ORDER),
            user_id=str(USER),
            total=money_pb2.Money(amount_minor=4200, currency="EUR"),
        ),
    ),
    (
        ReservationRejected(ORDER, "SKU-1"),
        pb.InventoryRejected(order_id=str(ORDER), sku="SKU-1", reason="out of stock"),
    ),
    (ReservationCommitted(ORDER), pb.InventoryCommitted(order_id=str(ORDER))),
    (
        ReservationReleased(ORDER, "payment failed"),
        pb.InventoryReleased(order_id=str(ORDER), reason="payment failed"),
    ),
]


@pytest.mark.parametrize(("event", "message"), CASES, ids=lambda c: type(c).__name__)
def test_every_domain_event_is_published_as_its_message(
    event: InventoryEvent, message: Message
) -> None:
    published = publication(event)
    assert published.message == message
    assert published.key == str(ORDER)
    assert topic_of(type(published.message)) == INVENTORY

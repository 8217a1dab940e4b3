"""Inventory's domain events as the saga's messages on shop.inventory.v1, keyed by order id.

The key keeps every event of one order on one partition, in order.
"""

from __future__ import annotations

from typing import assert_never

from google.protobuf.message import Message

from services.inventory.domain import (
    InventoryEvent,
    ReservationCommitted,
    ReservationRejected,
    ReservationReleased,
    StockReserved,
)
from shared.messaging.unit_of_work import Publication
from shared.proto_convert import money_to_proto
from shop.events.v1 import inventory_events_pb2


def publication(event: InventoryEvent) -> Publication:
    key = str(event.order_id)
    match event:
        case StockReserved():
            message: Message = inventory_events_pb2.InventoryReserved(
                order_id=key, user_id=str(event.user_id), total=money_to_proto(event.total)
            )
        case ReservationRejected():
            message = inventory_events_pb2.InventoryRejected(
                order_id=key, sku=event.sku, reason=event.reason
            )
        case ReservationCommitted():
            message = inventory_events_pb2.InventoryCommitted(order_id=key)
        case ReservationReleased():
            message = inventory_events_pb2.InventoryReleased(order_id=key, reason=event.reason)
        case _:
            assert_never(event)
    return Publication(message, key)

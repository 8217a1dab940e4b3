"""The saga's events as payment receives them, for its unit and integration tests."""

from __future__ import annotations

import uuid

from shop.common.v1 import money_pb2
from shop.events.v1 import inventory_events_pb2, order_events_pb2


def reserved(
    order_id: uuid.UUID, user_id: uuid.UUID, amount: int, currency: str = "USD"
) -> inventory_events_pb2.InventoryReserved:
    return inventory_events_pb2.InventoryReserved(
        order_id=str(order_id),
        user_id=str(user_id),
        total=money_pb2.Money(amount_minor=amount, currency=currency),
    )


def cancelled(
    order_id: uuid.UUID, user_id: uuid.UUID, reason: str = "cancelled by owner"
) -> order_events_pb2.OrderCancelled:
    return order_events_pb2.OrderCancelled(
        order_id=str(order_id), user_id=str(user_id), reason=reason
    )

"""The events the order service publishes on the orders topic, built from its domain."""

from __future__ import annotations

from services.order.domain import Order
from shared.proto_convert import money_to_proto
from shop.events.v1 import order_events_pb2


def order_created(order: Order) -> order_events_pb2.OrderCreated:
    return order_events_pb2.OrderCreated(
        order_id=str(order.order_id),
        user_id=str(order.user_id),
        lines=[order_events_pb2.OrderLine(sku=i.sku, quantity=i.quantity) for i in order.items],
        total=money_to_proto(order.total),
    )


def order_cancelled(order: Order) -> order_events_pb2.OrderCancelled:
    return order_events_pb2.OrderCancelled(
        order_id=str(order.order_id), user_id=str(order.user_id), reason=order.status_reason
    )

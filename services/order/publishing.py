"""The order's domain events as the saga's messages on shop.orders.v1, keyed by order id."""

from __future__ import annotations

from services.order.domain import Order, OrderCancelled, OrderEvent, OrderPlaced
from shared.messaging.unit_of_work import Publication
from shared.proto_convert import money_to_proto
from shop.events.v1 import order_events_pb2


def publication(event: OrderEvent) -> Publication:
    match event:
        case OrderPlaced(order):
            return Publication(order_created(order), str(order.order_id))
        case OrderCancelled(order):
            return Publication(order_cancelled(order), str(order.order_id))


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

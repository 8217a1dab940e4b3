"""The saga's events as inventory receives them, for its unit and integration tests."""

from __future__ import annotations

import uuid

from google.protobuf.message import Message

from shared.messaging.envelope import Event, wrap
from shop.common.v1 import money_pb2
from shop.events.v1 import order_events_pb2, payment_events_pb2

USER_ID = str(uuid.uuid4())
TOTAL = money_pb2.Money(amount_minor=4200, currency="EUR")


def new_order() -> str:
    return str(uuid.uuid4())


def order_created(order_id: str, *lines: tuple[str, int]) -> order_events_pb2.OrderCreated:
    return order_events_pb2.OrderCreated(
        order_id=order_id,
        user_id=USER_ID,
        total=TOTAL,
        lines=[order_events_pb2.OrderLine(sku=sku, quantity=q) for sku, q in lines],
    )


def order_cancelled(
    order_id: str, reason: str = "cancelled by customer"
) -> order_events_pb2.OrderCancelled:
    return order_events_pb2.OrderCancelled(order_id=order_id, user_id=USER_ID, reason=reason)


def payment_succeeded(order_id: str) -> payment_events_pb2.PaymentSucceeded:
    return payment_events_pb2.PaymentSucceeded(
        order_id=order_id, charge_id=str(uuid.uuid4()), amount=TOTAL
    )


def payment_failed(order_id: str) -> payment_events_pb2.PaymentFailed:
    return payment_events_pb2.PaymentFailed(order_id=order_id, reason="insufficient funds")


# The events inventory subscribes to.
SagaMessage = (
    order_events_pb2.OrderCreated
    | order_events_pb2.OrderCancelled
    | payment_events_pb2.PaymentSucceeded
    | payment_events_pb2.PaymentFailed
)


def event_of(message: SagaMessage) -> Event:
    """The message in its envelope, keyed by its order, as the consumer receives it."""
    payload: Message = message
    return Event(envelope=wrap(payload, message.order_id), payload=payload)

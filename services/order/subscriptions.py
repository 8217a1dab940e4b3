"""The saga events the order reacts to: the outcomes inventory and payment decide.

Reserved, released, succeeded and refunded change nothing for the order, so it
subscribes to none of them (the consumer skips their types on the topics it reads).
"""

from __future__ import annotations

from services.order import use_cases
from services.order.use_cases import OrderUnitOfWork
from shared.messaging.subscriptions import Subscriptions, subscribe
from shop.events.v1 import inventory_events_pb2, payment_events_pb2

SUBSCRIPTIONS: Subscriptions[OrderUnitOfWork] = Subscriptions(
    [
        subscribe(inventory_events_pb2.InventoryCommitted, use_cases.on_inventory_committed),
        subscribe(inventory_events_pb2.InventoryRejected, use_cases.on_inventory_rejected),
        subscribe(payment_events_pb2.PaymentFailed, use_cases.on_payment_failed),
    ]
)

"""The saga events inventory reacts to: new orders, payments and cancellations.

The consumer reads the topics these event types are published on (shop.orders.v1,
shop.payments.v1) and skips the other types there (PaymentRefunded, say).
"""

from __future__ import annotations

from services.inventory import use_cases
from services.inventory.use_cases import InventoryUnitOfWork
from shared.messaging.subscriptions import Subscriptions, subscribe
from shop.events.v1 import order_events_pb2, payment_events_pb2

SUBSCRIPTIONS: Subscriptions[InventoryUnitOfWork] = Subscriptions(
    [
        subscribe(order_events_pb2.OrderCreated, use_cases.reserve, batch=use_cases.reserve_run),
        subscribe(order_events_pb2.OrderCancelled, use_cases.release_on_cancel),
        subscribe(payment_events_pb2.PaymentSucceeded, use_cases.commit),
        subscribe(payment_events_pb2.PaymentFailed, use_cases.release_on_payment_failure),
    ],
    row_locks=use_cases.lock_stock,
)

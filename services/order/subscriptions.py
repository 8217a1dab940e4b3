"""The saga events the order reacts to: the steps inventory and payment take, and the
outcomes they decide.

InventoryReserved and PaymentSucceeded move the order's saga step (what WatchOrder
shows the customer); InventoryCommitted, InventoryRejected and PaymentFailed settle
its status. Released and refunded change nothing for the order, so it subscribes to
neither (the consumer skips their types on the topics it reads).
"""

from __future__ import annotations

from services.order import use_cases
from services.order.use_cases import OrderUnitOfWork
from shared.messaging.subscriptions import Subscriptions, subscribe
from shop.events.v1 import inventory_events_pb2, payment_events_pb2

SUBSCRIPTIONS: Subscriptions[OrderUnitOfWork] = Subscriptions(
    [
        subscribe(inventory_events_pb2.InventoryReserved, use_cases.on_inventory_reserved),
        subscribe(payment_events_pb2.PaymentSucceeded, use_cases.on_payment_succeeded),
        subscribe(inventory_events_pb2.InventoryCommitted, use_cases.on_inventory_committed),
        subscribe(inventory_events_pb2.InventoryRejected, use_cases.on_inventory_rejected),
        subscribe(payment_events_pb2.PaymentFailed, use_cases.on_payment_failed),
    ]
)

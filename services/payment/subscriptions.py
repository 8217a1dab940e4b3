"""The events payment reacts to, and the provider's answers prepared before each batch."""

from __future__ import annotations

from functools import partial

from services.payment import use_cases
from services.payment.adapters.authorizer import ProviderAuthorizer
from services.payment.use_cases import PaymentUnitOfWork
from shared.messaging.subscriptions import Subscriptions, subscribe
from shop.events.v1 import inventory_events_pb2, order_events_pb2


def subscriptions(authorizer: ProviderAuthorizer) -> Subscriptions[PaymentUnitOfWork]:
    """InventoryReserved charges (the provider asked by ``authorizer`` outside the
    transaction, before it), OrderCancelled refunds; every batch locks its wallets first."""
    return Subscriptions(
        [
            subscribe(
                inventory_events_pb2.InventoryReserved,
                partial(use_cases.charge, answers=authorizer),
                prepare=authorizer.authorize,
            ),
            subscribe(order_events_pb2.OrderCancelled, use_cases.refund_on_cancel),
        ],
        row_locks=use_cases.lock_wallets,
    )

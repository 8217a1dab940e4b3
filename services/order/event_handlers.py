"""How the order reacts to the saga's events: settle a pending order, ignore the rest.

Inventory and payment decide; the order only records the outcome. Handlers never
raise for a stale, duplicate or unknown event (they log it and return): raising
means "transient failure", which the consumer retries and then dead-letters.
"""

from __future__ import annotations

import logging

from services.order.domain import (
    SagaOutcome,
    inventory_committed,
    inventory_rejected,
    payment_failed,
    settle,
)
from services.order.persistence import OrderUnitOfWork
from shared.messaging.subscriptions import Subscriptions, subscribe
from shared.validation import parse_uuid
from shop.events.v1 import inventory_events_pb2, payment_events_pb2

log = logging.getLogger(__name__)


async def _settle(uow: OrderUnitOfWork, order_id_text: str, outcome: SagaOutcome) -> None:
    # An id that is no UUID is a malformed event: raising sends it to the dead-letter
    # topic, as every service's handlers do.
    order_id = parse_uuid(order_id_text, "order_id")
    # Locked: CancelOrder, the saga timeout or a handler of the other topic may
    # be deciding about this order right now; whoever locks first wins.
    order = await uow.orders.get(order_id, for_update=True)
    if order is None:
        log.debug("saga outcome for unknown order %s; ignored", order_id)
        return
    settled = settle(order, outcome)
    if settled is None:
        log.debug("saga outcome for order %s, already %s; ignored", order_id, order.status)
        return
    await uow.orders.save(settled)
    log.info("order %s is %s", order_id, settled.status)


async def on_inventory_committed(
    uow: OrderUnitOfWork, committed: inventory_events_pb2.InventoryCommitted
) -> None:
    await _settle(uow, committed.order_id, inventory_committed())


async def on_inventory_rejected(
    uow: OrderUnitOfWork, rejected: inventory_events_pb2.InventoryRejected
) -> None:
    await _settle(uow, rejected.order_id, inventory_rejected(rejected.sku))


async def on_payment_failed(uow: OrderUnitOfWork, failed: payment_events_pb2.PaymentFailed) -> None:
    await _settle(uow, failed.order_id, payment_failed(failed.reason))


# Reserved, released, succeeded and refunded change nothing for the order: the
# consumer skips event types that have no handler here.
SUBSCRIPTIONS: Subscriptions[OrderUnitOfWork] = Subscriptions(
    [
        subscribe(inventory_events_pb2.InventoryCommitted, on_inventory_committed),
        subscribe(inventory_events_pb2.InventoryRejected, on_inventory_rejected),
        subscribe(payment_events_pb2.PaymentFailed, on_payment_failed),
    ]
)

"""How the order reacts to the saga's events: settle a pending order, ignore the rest.

Inventory and payment decide; the order only records the outcome. Handlers never
raise for a stale, duplicate or unknown event (they log it and return): raising
means "transient failure", which the consumer retries and then dead-letters.
"""

from __future__ import annotations

import logging
import uuid
from typing import cast

from services.order.domain import (
    SagaOutcome,
    inventory_committed,
    inventory_rejected,
    payment_failed,
    settle,
)
from services.order.persistence import OrderUnitOfWork
from shared.messaging.consumer import Handler
from shared.messaging.envelope import Event
from shared.messaging.runtime import Subscriptions
from shared.messaging.topics import INVENTORY, PAYMENTS
from shop.events.v1 import inventory_events_pb2, payment_events_pb2

log = logging.getLogger(__name__)


async def _settle(uow: OrderUnitOfWork, event: Event, outcome: SagaOutcome) -> None:
    try:
        order_id = uuid.UUID(event.envelope.aggregate_id)
    except ValueError:
        log.warning(
            "%s %s names no order (%r); ignored",
            event.type,
            event.event_id,
            event.envelope.aggregate_id,
        )
        return
    # Locked: CancelOrder, the saga timeout or a handler of the other topic may
    # be deciding about this order right now; whoever locks first wins.
    order = await uow.orders.get(order_id, for_update=True)
    if order is None:
        log.debug("%s for unknown order %s; ignored", event.type, order_id)
        return
    settled = settle(order, outcome)
    if settled is None:
        log.debug("%s for order %s, already %s; ignored", event.type, order_id, order.status)
        return
    await uow.orders.save(settled)
    log.info("order %s is %s (%s)", order_id, settled.status, event.type)


async def on_inventory_committed(uow: OrderUnitOfWork, event: Event) -> None:
    await _settle(uow, event, inventory_committed())


async def on_inventory_rejected(uow: OrderUnitOfWork, event: Event) -> None:
    rejected = cast(inventory_events_pb2.InventoryRejected, event.payload)
    await _settle(uow, event, inventory_rejected(rejected.sku))


async def on_payment_failed(uow: OrderUnitOfWork, event: Event) -> None:
    failed = cast(payment_events_pb2.PaymentFailed, event.payload)
    await _settle(uow, event, payment_failed(failed.reason))


# Reserved, released, succeeded and refunded change nothing for the order: the
# consumer skips event types that have no handler here.
HANDLERS: dict[str, Handler[OrderUnitOfWork]] = {
    inventory_events_pb2.InventoryCommitted.DESCRIPTOR.full_name: on_inventory_committed,
    inventory_events_pb2.InventoryRejected.DESCRIPTOR.full_name: on_inventory_rejected,
    payment_events_pb2.PaymentFailed.DESCRIPTOR.full_name: on_payment_failed,
}

SUBSCRIPTIONS = Subscriptions(topics=[INVENTORY, PAYMENTS], handlers=HANDLERS)

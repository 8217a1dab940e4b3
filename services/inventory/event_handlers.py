"""Inventory's part in the order saga: each event, through the domain's state machine.

Each handler runs inside the consumer's unit of work (many events per
transaction), claims or locks the order's reservation before deciding, and
never raises for a stale, duplicate or out-of-order event: it logs and returns.
It raises only for a malformed event, which the consumer retries and then
dead-letters.
"""

from __future__ import annotations

import logging
import uuid

from google.protobuf.message import Message

from services.inventory.domain import (
    OUT_OF_STOCK,
    PAYMENT_FAILED,
    ReservationState,
    Trigger,
    react,
    rejection_reason,
    release_reason,
    requested_lines,
)
from services.inventory.persistence import InventoryUnitOfWork, SingleLineOrder
from shared.messaging.subscriptions import Subscriptions, subscribe
from shared.messaging.topics import INVENTORY
from shared.proto_convert import money_from_proto
from shared.validation import parse_uuid, uuids_in
from shop.events.v1 import inventory_events_pb2, order_events_pb2, payment_events_pb2

log = logging.getLogger(__name__)


async def on_order_created(
    uow: InventoryUnitOfWork, created: order_events_pb2.OrderCreated
) -> None:
    order_id = parse_uuid(created.order_id, "order_id")
    user_id = parse_uuid(created.user_id, "user_id")
    total = money_from_proto(created.total, "total")
    lines = requested_lines([(line.sku, line.quantity) for line in created.lines])
    step = react(None, Trigger.ORDER_CREATED)
    assert step is not None and step.if_short is not None  # the domain's table says so
    claim = await uow.reservations.claim_and_hold(order_id, user_id, total, lines, step.to)
    if not claim.claimed:
        # Every existing state ignores OrderCreated, so which one it is does not matter.
        log.debug("order %s already has a reservation; OrderCreated ignored", order_id)
        return
    key = str(order_id)
    if claim.short is None:
        uow.outbox.add(
            INVENTORY,
            inventory_events_pb2.InventoryReserved(
                order_id=key, user_id=str(user_id), total=created.total
            ),
            key,
        )
        return
    await uow.reservations.reject(order_id, step.to, step.if_short, rejection_reason(claim.short))
    uow.outbox.add(
        INVENTORY,
        inventory_events_pb2.InventoryRejected(order_id=key, sku=claim.short, reason=OUT_OF_STOCK),
        key,
    )


async def on_orders_created(
    uow: InventoryUnitOfWork, events: list[order_events_pb2.OrderCreated]
) -> None:
    """A run of OrderCreated at once: single-line orders of one SKU share one UPDATE.

    The outcome is what on_order_created would give each event in turn; only the
    number of statements differs. Orders of several SKUs take the per-event path.
    """
    step = react(None, Trigger.ORDER_CREATED)
    assert step is not None and step.if_short is not None  # the domain's table says so
    by_sku: dict[str, list[tuple[SingleLineOrder, order_events_pb2.OrderCreated]]] = {}
    for created in events:
        lines = requested_lines([(line.sku, line.quantity) for line in created.lines])
        if len(lines) != 1:
            await on_order_created(uow, created)
            continue
        order = SingleLineOrder(
            order_id=parse_uuid(created.order_id, "order_id"),
            user_id=parse_uuid(created.user_id, "user_id"),
            total=money_from_proto(created.total, "total"),
            quantity=lines[0].quantity,
        )
        by_sku.setdefault(lines[0].sku, []).append((order, created))
    for sku in sorted(by_sku):  # stock rows are locked in SKU order, as everywhere
        batch = by_sku[sku]
        claimed, held = await uow.reservations.claim_and_hold_same_sku(
            sku, [order for order, _ in batch], step.to, step.if_short, rejection_reason(sku)
        )
        for order, created in batch:
            if order.order_id not in claimed:
                log.debug("order %s already has a reservation; ignored", order.order_id)
                continue
            key = str(order.order_id)
            uow.outbox.add(
                INVENTORY,
                inventory_events_pb2.InventoryReserved(
                    order_id=key, user_id=str(order.user_id), total=created.total
                )
                if order.order_id in held
                else inventory_events_pb2.InventoryRejected(
                    order_id=key, sku=sku, reason=OUT_OF_STOCK
                ),
                key,
            )


async def on_payment_succeeded(
    uow: InventoryUnitOfWork, paid: payment_events_pb2.PaymentSucceeded
) -> None:
    order_id = parse_uuid(paid.order_id, "order_id")
    if await _advance_reserved(uow, order_id, Trigger.PAYMENT_SUCCEEDED, reason=""):
        uow.outbox.add(
            INVENTORY,
            inventory_events_pb2.InventoryCommitted(order_id=str(order_id)),
            str(order_id),
        )


async def on_payment_failed(
    uow: InventoryUnitOfWork, failed: payment_events_pb2.PaymentFailed
) -> None:
    order_id = parse_uuid(failed.order_id, "order_id")
    if await _advance_reserved(uow, order_id, Trigger.PAYMENT_FAILED, reason=PAYMENT_FAILED):
        uow.outbox.add(
            INVENTORY,
            inventory_events_pb2.InventoryReleased(order_id=str(order_id), reason=PAYMENT_FAILED),
            str(order_id),
        )


async def _advance_reserved(
    uow: InventoryUnitOfWork, order_id: uuid.UUID, trigger: Trigger, reason: str
) -> bool:
    """Applies ``trigger`` to a RESERVED reservation; False if it was in any other state.

    A payment event does something only to a RESERVED reservation (the domain's
    table), so one compare-and-set from RESERVED, which locks the row, decides.
    """
    step = react(ReservationState.RESERVED, trigger)
    assert step is not None  # the domain's table says so
    if await uow.reservations.advance(order_id, ReservationState.RESERVED, step, reason):
        return True
    log.debug("reservation of order %s is not reserved; %s ignored", order_id, trigger)
    return False


async def on_order_cancelled(
    uow: InventoryUnitOfWork, cancelled: order_events_pb2.OrderCancelled
) -> None:
    order_id = parse_uuid(cancelled.order_id, "order_id")
    user_id = parse_uuid(cancelled.user_id, "user_id")
    reason = release_reason(cancelled.reason)
    tombstone = react(None, Trigger.ORDER_CANCELLED)
    assert tombstone is not None  # the domain's table says so
    state, created = await uow.reservations.lock_or_create(order_id, user_id, tombstone.to, reason)
    if created:
        log.debug("order %s cancelled before its reservation; tombstone written", order_id)
        return
    step = react(state, Trigger.ORDER_CANCELLED)
    if step is None:
        log.debug("reservation of order %s is %s; OrderCancelled ignored", order_id, state)
        return
    assert state is not None  # None always reacts, with the tombstone above
    if not await uow.reservations.advance(order_id, state, step, reason):
        raise RuntimeError(f"reservation {order_id} changed state while locked")
    uow.outbox.add(
        INVENTORY,
        inventory_events_pb2.InventoryReleased(order_id=str(order_id), reason=reason),
        str(order_id),
    )


# The events that move an existing reservation on, by its order id.
ORDER_ID_EVENTS = (
    order_events_pb2.OrderCancelled,
    payment_events_pb2.PaymentSucceeded,
    payment_events_pb2.PaymentFailed,
)


async def lock_stock(uow: InventoryUnitOfWork, messages: list[Message]) -> None:
    """The stock rows a batch will change, locked first and in SKU order (see
    consumer.RowLocks): a new order's SKUs, and those of the reservations that a
    payment or a cancellation moves on."""
    skus: set[str] = set()
    order_ids: list[str] = []
    for message in messages:
        if isinstance(message, order_events_pb2.OrderCreated):
            skus.update(line.sku for line in message.lines)
        elif isinstance(message, ORDER_ID_EVENTS):
            order_ids.append(message.order_id)
    await uow.stock.lock_in_order(skus, uuids_in(order_ids))


SUBSCRIPTIONS: Subscriptions[InventoryUnitOfWork] = Subscriptions(
    [
        subscribe(order_events_pb2.OrderCreated, on_order_created, batch=on_orders_created),
        subscribe(order_events_pb2.OrderCancelled, on_order_cancelled),
        subscribe(payment_events_pb2.PaymentSucceeded, on_payment_succeeded),
        subscribe(payment_events_pb2.PaymentFailed, on_payment_failed),
    ],
    row_locks=lock_stock,
)

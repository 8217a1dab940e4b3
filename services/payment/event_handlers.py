"""Payment's part in the order saga: charge on InventoryReserved, refund on OrderCancelled.

The provider is asked before the transaction, by the consumer's preparer
(services/payment/authorizer.py); the handler books the answer it got.

Both handlers are safe on redelivery and in any arrival order: the order's
payment record is claimed (or locked) before anything is decided, and an event
that finds the decision already made changes nothing and raises nothing. Only
a payload that cannot be read raises, which sends it to the dead-letter topic.
"""

from __future__ import annotations

import logging

from google.protobuf.message import Message

from services.payment.authorizer import ProviderAuthorizer
from services.payment.domain import (
    OnCancel,
    Payment,
    PaymentState,
    charge_entry,
    debit_refusal,
    on_cancel,
    refund_entry,
)
from services.payment.persistence import PaymentUnitOfWork
from shared.messaging.subscriptions import Subscriptions, subscribe
from shared.messaging.topics import PAYMENTS
from shared.proto_convert import money_from_proto, money_to_proto
from shared.validation import parse_uuid, uuids_in
from shop.events.v1 import inventory_events_pb2, order_events_pb2, payment_events_pb2

log = logging.getLogger(__name__)


class PaymentEventHandlers:
    def __init__(self, authorizer: ProviderAuthorizer) -> None:
        self.authorizer = authorizer

    async def on_inventory_reserved(
        self, uow: PaymentUnitOfWork, reserved: inventory_events_pb2.InventoryReserved
    ) -> None:
        """Charges the order once: PaymentSucceeded, or PaymentFailed(reason)."""
        order_id = parse_uuid(reserved.order_id, "order_id")
        user_id = parse_uuid(reserved.user_id, "user_id")
        amount = money_from_proto(reserved.total, "total")

        if (known := await uow.payments.get(order_id)) is not None:
            log.debug(
                "order %s already has a %s payment; ignoring InventoryReserved",
                order_id,
                known.state.value,
            )
            return
        # Asked before this transaction (ProviderAuthorizer); the provider's answer for an
        # order is fixed by its idempotency key, so a duplicate racing us was told the same.
        decision = self.authorizer.answer_for(order_id)
        pending = Payment.claim(order_id=order_id, user_id=user_id, amount=amount)
        if not await uow.payments.claim(pending):
            log.debug("order %s was claimed by another delivery; ignoring", order_id)
            return

        if not decision.approved:
            await _fail(uow, pending, decision.reason)
        elif await uow.wallets.debit(user_id, amount):
            await _charge(uow, pending)
        else:
            await _fail(uow, pending, debit_refusal(await uow.wallets.get(user_id), amount))

    async def on_order_cancelled(
        self, uow: PaymentUnitOfWork, cancelled: order_events_pb2.OrderCancelled
    ) -> None:
        """Refunds a charge once; before any charge, leaves a tombstone that blocks one."""
        order_id = parse_uuid(cancelled.order_id, "order_id")
        user_id = parse_uuid(cancelled.user_id, "user_id")

        tombstone = Payment.tombstone(order_id=order_id, user_id=user_id, reason=cancelled.reason)
        if await uow.payments.claim(tombstone):
            log.debug("order %s cancelled before any charge; tombstone written", order_id)
            return
        current = await uow.payments.lock(order_id)
        if current is None:
            # The claim saw a row, so only a deleted record gets here: that is a bug.
            raise RuntimeError(f"payment for order {order_id} vanished")
        if on_cancel(current) is OnCancel.NOTHING:
            log.debug(
                "order %s cancelled with a %s payment; nothing to refund",
                order_id,
                current.state.value,
            )
            return
        await _refund(uow, current, cancelled.reason)


async def _charge(uow: PaymentUnitOfWork, pending: Payment) -> None:
    entry = charge_entry(pending)
    await uow.ledger.add(entry)
    await uow.payments.move(PaymentState.PENDING, pending.charged(entry.entry_id))
    uow.outbox.add(
        PAYMENTS,
        payment_events_pb2.PaymentSucceeded(
            order_id=str(pending.order_id),
            charge_id=str(entry.entry_id),
            amount=money_to_proto(entry.amount),
        ),
        str(pending.order_id),
    )
    log.debug(
        "order %s charged %s %s", pending.order_id, entry.amount.amount_minor, entry.amount.currency
    )


async def _fail(uow: PaymentUnitOfWork, pending: Payment, reason: str) -> None:
    failed = pending.failed(reason)
    await uow.payments.move(PaymentState.PENDING, failed)
    uow.outbox.add(
        PAYMENTS,
        payment_events_pb2.PaymentFailed(order_id=str(failed.order_id), reason=failed.reason or ""),
        str(failed.order_id),
    )
    log.debug("order %s not charged: %s", failed.order_id, failed.reason)


async def _refund(uow: PaymentUnitOfWork, charged: Payment, reason: str) -> None:
    entry = refund_entry(charged)
    if not await uow.wallets.give_back(entry.user_id, entry.amount):
        # The charge came out of this wallet in this currency; failing here is a bug,
        # and raising keeps the event for a retry and then the dead-letter topic.
        raise RuntimeError(
            f"wallet of user {entry.user_id} cannot take back the refund of"
            f" order {charged.order_id}"
        )
    await uow.ledger.add(entry)
    await uow.payments.move(PaymentState.CHARGED, charged.refunded(entry.entry_id, reason))
    uow.outbox.add(
        PAYMENTS,
        payment_events_pb2.PaymentRefunded(
            order_id=str(charged.order_id), amount=money_to_proto(entry.amount)
        ),
        str(charged.order_id),
    )
    log.debug(
        "order %s refunded %s %s",
        charged.order_id,
        entry.amount.amount_minor,
        entry.amount.currency,
    )


async def lock_wallets(uow: PaymentUnitOfWork, messages: list[Message]) -> None:
    """The wallets a batch will charge or refund, locked first and in user order (see
    consumer.RowLocks)."""
    users = [
        message.user_id
        for message in messages
        if isinstance(
            message, inventory_events_pb2.InventoryReserved | order_events_pb2.OrderCancelled
        )
    ]
    await uow.wallets.lock_in_order(uuids_in(users))


def subscriptions(authorizer: ProviderAuthorizer) -> Subscriptions[PaymentUnitOfWork]:
    """The topics payment consumes, a handler per event type it reacts to, and the
    provider's authorisations, prepared outside the transaction."""
    handlers = PaymentEventHandlers(authorizer)
    return Subscriptions(
        [
            subscribe(
                inventory_events_pb2.InventoryReserved,
                handlers.on_inventory_reserved,
                prepare=authorizer.authorize,
            ),
            subscribe(order_events_pb2.OrderCancelled, handlers.on_order_cancelled),
        ],
        row_locks=lock_wallets,
    )

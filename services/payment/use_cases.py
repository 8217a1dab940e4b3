"""Payment's application layer: the wallet API (top-ups, balances) and payment's part in
the order saga (charge on InventoryReserved, refund on OrderCancelled).

The provider is asked before the saga's transaction, by the consumer's preparer
(services/payment/adapters/authorizer.py); ``charge`` books the answer it got.

Both saga handlers are safe on redelivery and in any arrival order: the order's
payment record is claimed (or locked) before anything is decided, and an event
that finds the decision already made changes nothing and raises nothing. Only
a payload that cannot be read raises (InvalidArgument), which sends it to the
dead-letter topic.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection
from typing import Protocol

from google.protobuf.message import Message

from services.payment.domain import (
    EntryKind,
    LedgerEntry,
    OnCancel,
    Payment,
    PaymentEvent,
    PaymentState,
    ProviderDecision,
    Wallet,
    credit_refusal,
    debit_refusal,
    new_top_up,
    on_cancel,
    reject_reused_key,
    require_wallet_currency,
    settle_charge,
    settle_refund,
    settle_refusal,
)
from shared.messaging.unit_of_work import UnitOfWork
from shared.money import Money
from shared.proto_convert import money_from_proto
from shared.validation import parse_uuid, uuids_in
from shop.events.v1 import inventory_events_pb2, order_events_pb2

log = logging.getLogger(__name__)


# --- what the use cases need from storage -------------------------------------------------------


class WalletRepository(Protocol):
    async def get(self, user_id: uuid.UUID) -> Wallet | None: ...

    async def lock_in_order(self, user_ids: Collection[uuid.UUID]) -> None:
        """Locks these wallets until commit, in user-id order."""

    async def open(self, user_id: uuid.UUID, currency: str) -> None:
        """Creates an empty wallet unless the user already has one."""

    async def credit(self, user_id: uuid.UUID, amount: Money) -> Wallet | None:
        """Adds ``amount``; None (nothing added) if the currency differs or the balance
        would pass MAX_BALANCE_MINOR."""

    async def debit(self, user_id: uuid.UUID, amount: Money) -> bool:
        """Takes ``amount`` if the wallet holds that much in that currency, checked and
        written at once; False (nothing taken) otherwise, or with no wallet."""

    async def give_back(self, user_id: uuid.UUID, amount: Money) -> bool:
        """Adds a charged ``amount`` back, past any ceiling; False only with no wallet
        or another currency."""


class LedgerRepository(Protocol):
    async def add_once(self, entry: LedgerEntry) -> bool:
        """Adds the entry unless its (user, kind, idempotency key) is taken; True if added."""

    async def find_by_key(
        self, user_id: uuid.UUID, kind: EntryKind, idempotency_key: str
    ) -> LedgerEntry | None: ...

    async def add(self, entry: LedgerEntry) -> None:
        """Adds an order's charge or refund; a second one of an order is refused (raises)."""


class PaymentRepository(Protocol):
    async def get(self, order_id: uuid.UUID) -> Payment | None: ...

    async def lock(self, order_id: uuid.UUID) -> Payment | None:
        """The record, locked until commit."""

    async def claim(self, payment: Payment) -> bool:
        """Inserts the order's first record; False (nothing written) if it has one."""

    async def move(self, source: PaymentState, payment: Payment) -> None:
        """Stores ``payment`` over the record, which must be in ``source`` (else raises)."""


class PaymentUnitOfWork(UnitOfWork, Protocol):
    """One transaction: the repositories' changes and the recorded events are kept
    together when the block ends without an exception, or none of them."""

    @property
    def wallets(self) -> WalletRepository: ...

    @property
    def ledger(self) -> LedgerRepository: ...

    @property
    def payments(self) -> PaymentRepository: ...

    def record(self, *events: PaymentEvent) -> None: ...


UnitOfWorkFactory = Callable[[], PaymentUnitOfWork]


class ProviderAnswers(Protocol):
    def answer_for(self, order_id: uuid.UUID) -> ProviderDecision:
        """The provider's answer for an order, asked for before the transaction."""


# --- the wallet API -----------------------------------------------------------------------------


async def top_up(
    units: UnitOfWorkFactory,
    *,
    user_id: uuid.UUID,
    amount: Money,
    idempotency_key: str,
    currency: str,
) -> Wallet:
    """Credits the user's wallet once per idempotency key, opening it if needed.

    A retry with the same key and amount returns the wallet as it is now,
    crediting nothing; the same key with another amount or currency is
    FailedPrecondition (the key already names another request), and so is a
    credit past the balance ceiling; nothing is written then.
    """
    amount = require_wallet_currency(amount, currency, "amount.currency")
    entry = new_top_up(user_id=user_id, amount=amount, idempotency_key=idempotency_key)
    async with units() as uow:
        return await _book_top_up(uow, entry, currency)


async def _book_top_up(uow: PaymentUnitOfWork, entry: LedgerEntry, currency: str) -> Wallet:
    """Books the entry and credits the wallet once, or returns the wallet of the first attempt."""
    await uow.wallets.open(entry.user_id, currency)
    if await uow.ledger.add_once(entry):
        credited = await uow.wallets.credit(entry.user_id, entry.amount)
        if credited is not None:
            return credited
        wallet = await uow.wallets.get(entry.user_id)
        assert wallet is not None  # opened above, in this transaction
        raise credit_refusal(wallet, entry.amount)
    assert entry.idempotency_key is not None
    recorded = await uow.ledger.find_by_key(entry.user_id, entry.kind, entry.idempotency_key)
    assert recorded is not None  # the conflict that skipped the insert is this row
    reject_reused_key(recorded, entry)
    wallet = await uow.wallets.get(entry.user_id)
    assert wallet is not None  # a ledger entry's wallet exists (foreign key)
    return wallet


async def wallet_of(units: UnitOfWorkFactory, user_id: uuid.UUID, currency: str) -> Wallet:
    """The user's wallet; a user without one has an empty one (reading never creates it)."""
    async with units() as uow:
        wallet = await uow.wallets.get(user_id)
    return wallet or Wallet.empty(user_id, currency)


# --- the saga -----------------------------------------------------------------------------------


async def lock_wallets(uow: PaymentUnitOfWork, messages: list[Message]) -> None:
    """The wallets a batch will charge or refund, locked first and in user order (see
    consumer.RowLocks); an unreadable user id is left to its handler to refuse."""
    users = [
        message.user_id
        for message in messages
        if isinstance(
            message, inventory_events_pb2.InventoryReserved | order_events_pb2.OrderCancelled
        )
    ]
    await uow.wallets.lock_in_order(uuids_in(users))


async def charge(
    uow: PaymentUnitOfWork,
    reserved: inventory_events_pb2.InventoryReserved,
    *,
    answers: ProviderAnswers,
) -> None:
    """Charges the order once: OrderCharged, or ChargeRefused(reason)."""
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
    decision = answers.answer_for(order_id)
    pending = Payment.claim(order_id=order_id, user_id=user_id, amount=amount)
    if not await uow.payments.claim(pending):
        log.debug("order %s was claimed by another delivery; ignoring", order_id)
        return

    if not decision.approved:
        await _refuse(uow, pending, decision.reason)
    elif await uow.wallets.debit(user_id, amount):
        await _charge(uow, pending)
    else:
        await _refuse(uow, pending, debit_refusal(await uow.wallets.get(user_id), amount))


async def refund_on_cancel(
    uow: PaymentUnitOfWork, cancelled: order_events_pb2.OrderCancelled
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
    charged, entry, event = settle_charge(pending)
    await uow.ledger.add(entry)
    await uow.payments.move(PaymentState.PENDING, charged)
    uow.record(event)
    log.debug(
        "order %s charged %s %s", pending.order_id, entry.amount.amount_minor, entry.amount.currency
    )


async def _refuse(uow: PaymentUnitOfWork, pending: Payment, reason: str) -> None:
    failed, event = settle_refusal(pending, reason)
    await uow.payments.move(PaymentState.PENDING, failed)
    uow.record(event)
    log.debug("order %s not charged: %s", failed.order_id, failed.reason)


async def _refund(uow: PaymentUnitOfWork, charged: Payment, reason: str) -> None:
    refunded, entry, event = settle_refund(charged, reason)
    if not await uow.wallets.give_back(entry.user_id, entry.amount):
        # The charge came out of this wallet in this currency; failing here is a bug,
        # and raising keeps the event for a retry and then the dead-letter topic.
        raise RuntimeError(
            f"wallet of user {entry.user_id} cannot take back the refund of"
            f" order {charged.order_id}"
        )
    await uow.ledger.add(entry)
    await uow.payments.move(PaymentState.CHARGED, refunded)
    uow.record(event)
    log.debug(
        "order %s refunded %s %s",
        charged.order_id,
        entry.amount.amount_minor,
        entry.amount.currency,
    )

"""Wallet, ledger and per-order payment rules, and the events the saga's decisions announce,
in plain Python with no I/O.

The invariant the audit checks: a wallet's balance equals the sum of its
top-ups and refunds minus the sum of its charges, and is never negative.
In the saga an order is charged at most once and refunded at most once; its
payment record's state machine (below) says which of those may still happen.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from shared.errors import FailedPrecondition, InvalidArgument
from shared.money import MAX_AMOUNT_MINOR, Money
from shared.validation import require_idempotency_key

# A ceiling on one wallet, so that balances and ledger sums stay far inside BIGINT.
MAX_BALANCE_MINOR = 100 * MAX_AMOUNT_MINOR


class EntryKind(enum.StrEnum):
    TOPUP = "topup"
    CHARGE = "charge"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class Wallet:
    user_id: uuid.UUID
    balance: Money
    # None for a wallet that has never been written (no row yet).
    updated_at: datetime | None

    @classmethod
    def empty(cls, user_id: uuid.UUID, currency: str) -> Wallet:
        return cls(user_id=user_id, balance=Money(0, currency), updated_at=None)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    entry_id: uuid.UUID
    user_id: uuid.UUID
    kind: EntryKind
    amount: Money
    idempotency_key: str | None
    order_id: uuid.UUID | None
    created_at: datetime

    def repeats(self, other: LedgerEntry) -> bool:
        """Whether ``other`` is a retry of this entry rather than a different request."""
        return (self.user_id, self.kind, self.amount) == (other.user_id, other.kind, other.amount)


def require_wallet_currency(amount: Money, currency: str, field: str) -> Money:
    if amount.currency != currency:
        raise InvalidArgument(field, f"wallets are kept in {currency}, got {amount.currency}")
    return amount


def new_top_up(*, user_id: uuid.UUID, amount: Money, idempotency_key: str) -> LedgerEntry:
    if not 1 <= amount.amount_minor <= MAX_AMOUNT_MINOR:
        raise InvalidArgument("amount.amount_minor", f"must be between 1 and {MAX_AMOUNT_MINOR}")
    return LedgerEntry(
        entry_id=uuid.uuid4(),
        user_id=user_id,
        kind=EntryKind.TOPUP,
        amount=amount,
        idempotency_key=require_idempotency_key(idempotency_key),
        order_id=None,
        created_at=datetime.now(UTC),
    )


def reject_reused_key(recorded: LedgerEntry, attempted: LedgerEntry) -> None:
    """A key names one request: reusing it for a different one is refused, not merged."""
    if not recorded.repeats(attempted):
        raise FailedPrecondition(
            f"idempotency_key {attempted.idempotency_key!r} was already used for a"
            f" {recorded.kind.value} of {recorded.amount.amount_minor}"
            f" {recorded.amount.currency}"
        )


def credit_refusal(wallet: Wallet, amount: Money) -> FailedPrecondition:
    """Why a wallet could not take ``amount``, for the caller to see."""
    if wallet.balance.currency != amount.currency:
        return FailedPrecondition(
            f"this wallet is kept in {wallet.balance.currency}, not {amount.currency}"
        )
    return FailedPrecondition(
        f"a balance above {MAX_BALANCE_MINOR} {wallet.balance.currency} minor units is not allowed"
    )


# --- the order saga: one payment record per order -----------------------------------------------

DECLINED_BY_PROVIDER = "declined by provider"
INSUFFICIENT_FUNDS = "insufficient funds"
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class ProviderDecision:
    """The payment provider's answer about one order: asked by the adapter, booked here."""

    approved: bool
    reason: str = ""


class IllegalTransition(FailedPrecondition):
    """A payment was asked to move where its state machine does not go: a bug, not input."""


class PaymentState(enum.StrEnum):
    # Claimed by the delivery that decides; settled to CHARGED or FAILED in the same
    # transaction, so it is never committed (a deferred trigger refuses that).
    PENDING = "pending"
    CHARGED = "charged"
    FAILED = "failed"
    REFUNDED = "refunded"
    # A tombstone: the order was cancelled before anything was charged, so a late
    # InventoryReserved finds the record and charges nothing.
    CANCELLED = "cancelled"


_NEXT: dict[PaymentState, frozenset[PaymentState]] = {
    PaymentState.PENDING: frozenset({PaymentState.CHARGED, PaymentState.FAILED}),
    PaymentState.CHARGED: frozenset({PaymentState.REFUNDED}),
    PaymentState.FAILED: frozenset(),
    PaymentState.REFUNDED: frozenset(),
    PaymentState.CANCELLED: frozenset(),
}


def can_move(source: PaymentState, target: PaymentState) -> bool:
    return target in _NEXT[source]


def _reason(text: str) -> str | None:
    text = text.strip()
    return text[:MAX_REASON] if text else None


@dataclass(frozen=True, slots=True)
class Payment:
    order_id: uuid.UUID
    user_id: uuid.UUID
    state: PaymentState
    # None only for a tombstone: a cancellation does not say what the order cost.
    amount: Money | None
    reason: str | None
    charge_id: uuid.UUID | None
    refund_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def claim(cls, *, order_id: uuid.UUID, user_id: uuid.UUID, amount: Money) -> Payment:
        now = datetime.now(UTC)
        return cls(order_id, user_id, PaymentState.PENDING, amount, None, None, None, now, now)

    @classmethod
    def tombstone(cls, *, order_id: uuid.UUID, user_id: uuid.UUID, reason: str) -> Payment:
        now = datetime.now(UTC)
        return cls(
            order_id, user_id, PaymentState.CANCELLED, None, _reason(reason), None, None, now, now
        )

    def charged(self, charge_id: uuid.UUID) -> Payment:
        self._require_move(PaymentState.CHARGED)
        return replace(
            self, state=PaymentState.CHARGED, charge_id=charge_id, updated_at=datetime.now(UTC)
        )

    def failed(self, reason: str) -> Payment:
        self._require_move(PaymentState.FAILED)
        return replace(
            self,
            state=PaymentState.FAILED,
            reason=_reason(reason) or "unknown",
            updated_at=datetime.now(UTC),
        )

    def refunded(self, refund_id: uuid.UUID, reason: str) -> Payment:
        self._require_move(PaymentState.REFUNDED)
        return replace(
            self,
            state=PaymentState.REFUNDED,
            refund_id=refund_id,
            reason=_reason(reason) or self.reason,
            updated_at=datetime.now(UTC),
        )

    def _require_move(self, target: PaymentState) -> None:
        if not can_move(self.state, target):
            raise IllegalTransition(
                f"payment for order {self.order_id} cannot go from {self.state.value}"
                f" to {target.value}"
            )


class OnCancel(enum.Enum):
    REFUND = "refund"
    NOTHING = "nothing"


def on_cancel(current: Payment) -> OnCancel:
    """What OrderCancelled does to an order's existing payment record.

    (An order without a record gets a tombstone instead; that is decided by the
    atomic insert, not here.) Only a charge is undone; a failed, refunded or
    already cancelled payment has nothing left to give back.
    """
    if current.state is PaymentState.PENDING:
        # Another transaction's claim is invisible until it settles, and ours settles
        # before the handler returns: seeing one means a handler forgot to.
        raise IllegalTransition(f"payment for order {current.order_id} is still pending")
    return OnCancel.REFUND if current.state is PaymentState.CHARGED else OnCancel.NOTHING


def debit_refusal(wallet: Wallet | None, amount: Money) -> str:
    """Why a conditional debit of ``amount`` took nothing, as PaymentFailed says it."""
    if wallet is not None and wallet.balance.currency != amount.currency:
        return f"wallet is kept in {wallet.balance.currency}, not {amount.currency}"
    return INSUFFICIENT_FUNDS


def _order_entry(kind: EntryKind, payment: Payment) -> LedgerEntry:
    if payment.amount is None:
        raise IllegalTransition(f"payment for order {payment.order_id} has no amount")
    return LedgerEntry(
        entry_id=uuid.uuid4(),
        user_id=payment.user_id,
        kind=kind,
        amount=payment.amount,
        idempotency_key=None,
        order_id=payment.order_id,
        created_at=datetime.now(UTC),
    )


def charge_entry(payment: Payment) -> LedgerEntry:
    if payment.state is not PaymentState.PENDING:
        raise IllegalTransition(f"only a pending payment is charged, not {payment.state.value}")
    return _order_entry(EntryKind.CHARGE, payment)


def refund_entry(payment: Payment) -> LedgerEntry:
    if payment.state is not PaymentState.CHARGED:
        raise IllegalTransition(f"only a charged payment is refunded, not {payment.state.value}")
    return _order_entry(EntryKind.REFUND, payment)


# --- what the saga's decisions announce ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderCharged:
    """The order's amount left the wallet, booked as the ledger entry ``charge_id``."""

    order_id: uuid.UUID
    charge_id: uuid.UUID
    amount: Money


@dataclass(frozen=True, slots=True)
class ChargeRefused:
    """The order was not charged: the provider declined, or the wallet could not pay."""

    order_id: uuid.UUID
    reason: str


@dataclass(frozen=True, slots=True)
class ChargeRefunded:
    """The order's charge went back to the wallet."""

    order_id: uuid.UUID
    amount: Money


PaymentEvent = OrderCharged | ChargeRefused | ChargeRefunded


def settle_charge(pending: Payment) -> tuple[Payment, LedgerEntry, OrderCharged]:
    """A claimed payment charged: its new state, the ledger entry to book, the event."""
    entry = charge_entry(pending)
    charged = pending.charged(entry.entry_id)
    return charged, entry, OrderCharged(pending.order_id, entry.entry_id, entry.amount)


def settle_refusal(pending: Payment, reason: str) -> tuple[Payment, ChargeRefused]:
    """A claimed payment that could not be charged, and the event that says why."""
    failed = pending.failed(reason)
    return failed, ChargeRefused(failed.order_id, failed.reason or "")


def settle_refund(charged: Payment, reason: str) -> tuple[Payment, LedgerEntry, ChargeRefunded]:
    """A charge given back: the payment's new state, the ledger entry to book, the event."""
    entry = refund_entry(charged)
    refunded = charged.refunded(entry.entry_id, reason)
    return refunded, entry, ChargeRefunded(charged.order_id, entry.amount)

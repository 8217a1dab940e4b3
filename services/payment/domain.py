"""Wallet and ledger rules, in plain Python with no I/O.

The invariant the audit checks: a wallet's balance equals the sum of its
top-ups and refunds minus the sum of its charges, and is never negative.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.errors import FailedPrecondition, InvalidArgument
from shared.money import MAX_AMOUNT_MINOR, Money

MAX_IDEMPOTENCY_KEY = 64
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


def parse_idempotency_key(value: str, field: str = "idempotency_key") -> str:
    """Kept verbatim (not stripped): the client's key is compared byte for byte."""
    if not value.strip():
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_IDEMPOTENCY_KEY:
        raise InvalidArgument(field, f"must be at most {MAX_IDEMPOTENCY_KEY} characters")
    # PostgreSQL text cannot hold NUL, and control characters in a key are a client bug.
    if not value.isprintable():
        raise InvalidArgument(field, "must not contain control characters")
    return value


def require_wallet_currency(amount: Money, currency: str, field: str) -> Money:
    if amount.currency != currency:
        raise InvalidArgument(field, f"wallets are kept in {currency}, got {amount.currency}")
    return amount


def new_top_up(*, user_id: uuid.UUID, amount: Money, idempotency_key: str) -> LedgerEntry:
    if not 1 <= amount.amount_minor <= MAX_AMOUNT_MINOR:
        raise InvalidArgument(
            "amount.amount_minor", f"must be between 1 and {MAX_AMOUNT_MINOR}"
        )
    return LedgerEntry(
        entry_id=uuid.uuid4(),
        user_id=user_id,
        kind=EntryKind.TOPUP,
        amount=amount,
        idempotency_key=parse_idempotency_key(idempotency_key),
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

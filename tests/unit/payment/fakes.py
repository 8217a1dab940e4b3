"""Payment's storage in memory: the answers the SQL gives, without a database.

Each repository keeps the conditions its statements put in SQL (a debit only
``WHERE balance_minor >= amount AND currency = ...``, a claim ``ON CONFLICT DO
NOTHING``, a move only from the state it expects) and the schema's constraints
(one charge and one refund per order, one top-up per key, no pending payment at
commit, ledger rows of an existing wallet). One task runs at a time here, so a
row lock has nothing to wait for: the locks taken are only written down.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType

from services.payment.adapters.provider import APPROVED, DECLINED
from services.payment.domain import (
    MAX_BALANCE_MINOR,
    EntryKind,
    LedgerEntry,
    Payment,
    PaymentState,
    ProviderDecision,
    Wallet,
)
from services.payment.publishing import publication
from shared.money import Money
from tests.support.fake_unit_of_work import FakeUnitOfWork


class ConstraintViolation(Exception):
    """What PostgreSQL would refuse: a unique index, a check, a foreign key, a trigger."""


class InMemoryWallets:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Wallet] = {}
        self.locks: list[list[uuid.UUID]] = []  # each lock_in_order call, in call order

    def balance(self, user_id: uuid.UUID) -> int | None:
        """The balance in minor units, None without a wallet (for the tests)."""
        wallet = self.rows.get(user_id)
        return None if wallet is None else wallet.balance.amount_minor

    async def get(self, user_id: uuid.UUID) -> Wallet | None:
        return self.rows.get(user_id)

    async def lock_in_order(self, user_ids: Collection[uuid.UUID]) -> None:
        self.locks.append(sorted(u for u in user_ids if u in self.rows))

    async def open(self, user_id: uuid.UUID, currency: str) -> None:
        if user_id not in self.rows:
            self.rows[user_id] = Wallet(user_id, Money(0, currency), datetime.now(UTC))

    async def credit(self, user_id: uuid.UUID, amount: Money) -> Wallet | None:
        wallet = self.rows.get(user_id)
        if (
            wallet is None
            or wallet.balance.currency != amount.currency
            or wallet.balance.amount_minor > MAX_BALANCE_MINOR - amount.amount_minor
        ):
            return None
        return self._add(wallet, amount.amount_minor)

    async def debit(self, user_id: uuid.UUID, amount: Money) -> bool:
        wallet = self.rows.get(user_id)
        if (
            wallet is None
            or wallet.balance.currency != amount.currency
            or wallet.balance.amount_minor < amount.amount_minor
        ):
            return False
        self._add(wallet, -amount.amount_minor)
        return True

    async def give_back(self, user_id: uuid.UUID, amount: Money) -> bool:
        wallet = self.rows.get(user_id)
        if wallet is None or wallet.balance.currency != amount.currency:
            return False
        self._add(wallet, amount.amount_minor)
        return True

    def _add(self, wallet: Wallet, minor: int) -> Wallet:
        balance = Money(wallet.balance.amount_minor + minor, wallet.balance.currency)
        self.rows[wallet.user_id] = updated = replace(
            wallet, balance=balance, updated_at=datetime.now(UTC)
        )
        return updated


class InMemoryLedger:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, LedgerEntry] = {}

    def of_order(self, order_id: uuid.UUID) -> list[EntryKind]:
        """The kinds of an order's entries, charge before refund (for the tests)."""
        return sorted(e.kind for e in self.rows.values() if e.order_id == order_id)

    async def add_once(self, entry: LedgerEntry) -> bool:
        if self._same_key(entry) is not None:
            return False
        await self.add(entry)
        return True

    async def find_by_key(
        self, user_id: uuid.UUID, kind: EntryKind, idempotency_key: str
    ) -> LedgerEntry | None:
        return next(
            (
                e
                for e in self.rows.values()
                if (e.user_id, e.kind, e.idempotency_key) == (user_id, kind, idempotency_key)
            ),
            None,
        )

    async def add(self, entry: LedgerEntry) -> None:
        if entry.entry_id in self.rows:
            raise ConstraintViolation(f"ledger entry {entry.entry_id} exists")
        if self._same_key(entry) is not None:
            raise ConstraintViolation("ledger_idempotency")
        if entry.kind is not EntryKind.TOPUP and any(
            (e.order_id, e.kind) == (entry.order_id, entry.kind) for e in self.rows.values()
        ):
            raise ConstraintViolation(f"ledger_one_{entry.kind.value}_per_order")
        self.rows[entry.entry_id] = entry

    def _same_key(self, entry: LedgerEntry) -> LedgerEntry | None:
        # A NULL key is unique to itself in SQL: charges and refunds never conflict here.
        if entry.idempotency_key is None:
            return None
        return next(
            (
                e
                for e in self.rows.values()
                if (e.user_id, e.kind, e.idempotency_key)
                == (entry.user_id, entry.kind, entry.idempotency_key)
            ),
            None,
        )


class InMemoryPayments:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Payment] = {}

    def state_of(self, order_id: uuid.UUID) -> PaymentState | None:
        payment = self.rows.get(order_id)
        return None if payment is None else payment.state

    async def get(self, order_id: uuid.UUID) -> Payment | None:
        return self.rows.get(order_id)

    async def lock(self, order_id: uuid.UUID) -> Payment | None:
        return self.rows.get(order_id)

    async def claim(self, payment: Payment) -> bool:
        if payment.order_id in self.rows:
            return False
        self.rows[payment.order_id] = _checked(payment)
        return True

    async def move(self, source: PaymentState, payment: Payment) -> None:
        current = self.rows.get(payment.order_id)
        if current is None or current.state is not source:
            raise RuntimeError(f"payment for order {payment.order_id} was not {source.value}")
        # The UPDATE sets only these columns; the rest stay as claimed.
        self.rows[payment.order_id] = _checked(
            replace(
                current,
                state=payment.state,
                reason=payment.reason,
                charge_id=payment.charge_id,
                refund_id=payment.refund_id,
                updated_at=payment.updated_at,
            )
        )


def _checked(payment: Payment) -> Payment:
    """The payments table's CHECK constraints."""
    state = payment.state
    if state is not PaymentState.CANCELLED and payment.amount is None:
        raise ConstraintViolation("payments_amount_known")
    if (state in (PaymentState.CHARGED, PaymentState.REFUNDED)) != (payment.charge_id is not None):
        raise ConstraintViolation("payments_charge_booked")
    if (state is PaymentState.REFUNDED) != (payment.refund_id is not None):
        raise ConstraintViolation("payments_refund_booked")
    if state is PaymentState.FAILED and payment.reason is None:
        raise ConstraintViolation("payments_failure_explained")
    return payment


class FakePaymentUnitOfWork(FakeUnitOfWork):
    """One object for every transaction of a test: enter it as often as the consumer or
    the API would open a unit of work; ``published`` gathers what each commit announced."""

    REPOSITORIES = ("wallets", "ledger", "payments")

    def __init__(self) -> None:
        super().__init__(publication)
        self.wallets = InMemoryWallets()
        self.ledger = InMemoryLedger()
        self.payments = InMemoryPayments()

    def __call__(self) -> FakePaymentUnitOfWork:
        """The factory the API's use cases open their transactions with: this same store."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self._check_at_commit()
            except ConstraintViolation as violation:
                await super().__aexit__(ConstraintViolation, violation, None)
                raise
        await super().__aexit__(exc_type, exc, tb)

    def _check_at_commit(self) -> None:
        # Deferred in the schema (the pending trigger); the foreign keys are checked per
        # statement there, here at commit: either way the transaction is lost.
        for payment in self.payments.rows.values():
            if payment.state is PaymentState.PENDING:
                raise ConstraintViolation(f"payment for order {payment.order_id} is still pending")
            for booked in (payment.charge_id, payment.refund_id):
                if booked is not None and booked not in self.ledger.rows:
                    raise ConstraintViolation(f"payment {payment.order_id} books no ledger row")
        for entry in self.ledger.rows.values():
            if entry.user_id not in self.wallets.rows:
                raise ConstraintViolation(f"ledger entry {entry.entry_id} has no wallet")


class FixedAnswers:
    """The provider's answers as the test decides them: approved, but for ``declined``."""

    def __init__(self, declined: Collection[uuid.UUID] = ()) -> None:
        self.declined = set(declined)

    def answer_for(self, order_id: uuid.UUID) -> ProviderDecision:
        return DECLINED if order_id in self.declined else APPROVED


def books_disagree(uow: FakePaymentUnitOfWork) -> list[str]:
    """The audit's invariants, over the fake's rows: what breaks them (none, if the books
    balance). A wallet's balance is its top-ups and refunds less its charges, never
    negative; a payment's state says which ledger rows its order has."""
    problems = []
    for user_id, wallet in uow.wallets.rows.items():
        net = sum(
            -e.amount.amount_minor if e.kind is EntryKind.CHARGE else e.amount.amount_minor
            for e in uow.ledger.rows.values()
            if e.user_id == user_id
        )
        if wallet.balance.amount_minor != net or net < 0:
            problems.append(f"wallet {user_id}: balance {wallet.balance} against ledger {net}")
    expected = {
        PaymentState.CHARGED: [EntryKind.CHARGE],
        PaymentState.REFUNDED: [EntryKind.CHARGE, EntryKind.REFUND],
        PaymentState.FAILED: [],
        PaymentState.CANCELLED: [],
    }
    for order_id, payment in uow.payments.rows.items():
        kinds = uow.ledger.of_order(order_id)
        if kinds != expected.get(payment.state):
            problems.append(f"order {order_id}: {payment.state.value} with ledger {kinds}")
    orders = {e.order_id for e in uow.ledger.rows.values() if e.order_id is not None}
    problems += [f"order {o}: ledger rows, no payment" for o in orders - set(uow.payments.rows)]
    return problems

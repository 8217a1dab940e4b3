"""The wallet, ledger and payment repositories and the unit of work, on asyncpg.

They implement the Protocols of services/payment/use_cases.py; the checks the use
cases rely on (enough funds, one claim per order, one key per top-up) are single
statements here, under the row's lock, so concurrent deliveries cannot both pass them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.payment.domain import (
    MAX_BALANCE_MINOR,
    EntryKind,
    LedgerEntry,
    Payment,
    PaymentState,
    Wallet,
)
from services.payment.publishing import publication
from shared.messaging.unit_of_work import PostgresUnitOfWork
from shared.money import Money

_WALLET_COLUMNS = "user_id, balance_minor, currency, updated_at"
_ENTRY_COLUMNS = (
    "entry_id, user_id, kind, amount_minor, currency, idempotency_key, order_id, created_at"
)
_PAYMENT_COLUMNS = (
    "order_id, user_id, state, amount_minor, currency, reason, charge_id, refund_id,"
    " created_at, updated_at"
)


def _wallet(row: asyncpg.Record) -> Wallet:
    return Wallet(
        user_id=row["user_id"],
        balance=Money(row["balance_minor"], row["currency"]),
        updated_at=row["updated_at"],
    )


def _entry(row: asyncpg.Record) -> LedgerEntry:
    return LedgerEntry(
        entry_id=row["entry_id"],
        user_id=row["user_id"],
        kind=EntryKind(row["kind"]),
        amount=Money(row["amount_minor"], row["currency"]),
        idempotency_key=row["idempotency_key"],
        order_id=row["order_id"],
        created_at=row["created_at"],
    )


def _payment(row: asyncpg.Record) -> Payment:
    amount_minor = row["amount_minor"]
    return Payment(
        order_id=row["order_id"],
        user_id=row["user_id"],
        state=PaymentState(row["state"]),
        amount=Money(amount_minor, row["currency"]) if amount_minor is not None else None,
        reason=row["reason"],
        charge_id=row["charge_id"],
        refund_id=row["refund_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PostgresWalletRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def get(self, user_id: uuid.UUID) -> Wallet | None:
        row = await self._conn.fetchrow(
            f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE user_id = $1", user_id
        )
        return _wallet(row) if row else None

    async def lock_in_order(self, user_ids: Collection[uuid.UUID]) -> None:
        """Locks these wallets, in user-id order: the one order every batch takes them in."""
        await self._conn.execute(
            "SELECT 1 FROM wallets WHERE user_id = ANY($1::uuid[]) ORDER BY user_id FOR UPDATE",
            sorted(user_ids),
        )

    async def open(self, user_id: uuid.UUID, currency: str) -> None:
        """Creates an empty wallet unless the user already has one."""
        await self._conn.execute(
            "INSERT INTO wallets (user_id, balance_minor, currency, updated_at)"
            " VALUES ($1, 0, $2, now()) ON CONFLICT (user_id) DO NOTHING",
            user_id,
            currency,
        )

    async def credit(self, user_id: uuid.UUID, amount: Money) -> Wallet | None:
        """Adds ``amount`` in place; None when the currency differs or the cap would be passed.

        The increment happens in the row under its lock, so concurrent credits
        never read a stale balance.
        """
        row = await self._conn.fetchrow(
            "UPDATE wallets SET balance_minor = balance_minor + $2::bigint, updated_at = now()"
            " WHERE user_id = $1 AND currency = $3 AND balance_minor <= $4::bigint - $2::bigint"
            f" RETURNING {_WALLET_COLUMNS}",
            user_id,
            amount.amount_minor,
            amount.currency,
            MAX_BALANCE_MINOR,
        )
        return _wallet(row) if row else None

    async def debit(self, user_id: uuid.UUID, amount: Money) -> bool:
        """Takes ``amount`` if the wallet holds that much in that currency; False otherwise.

        Check and write are one statement under the row lock, so two charges
        can never both pass the check on one balance.
        """
        row = await self._conn.fetchval(
            "UPDATE wallets SET balance_minor = balance_minor - $2::bigint, updated_at = now()"
            " WHERE user_id = $1 AND currency = $3 AND balance_minor >= $2::bigint"
            " RETURNING true",
            user_id,
            amount.amount_minor,
            amount.currency,
        )
        return row is not None

    async def give_back(self, user_id: uuid.UUID, amount: Money) -> bool:
        """Returns a charged ``amount``; False only if the wallet is gone or changed currency.

        Unlike a top-up this ignores the balance ceiling: the money was the
        user's before the charge, and a refund is not optional.
        """
        row = await self._conn.fetchval(
            "UPDATE wallets SET balance_minor = balance_minor + $2::bigint, updated_at = now()"
            " WHERE user_id = $1 AND currency = $3 RETURNING true",
            user_id,
            amount.amount_minor,
            amount.currency,
        )
        return row is not None


class PostgresLedgerRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def add_once(self, entry: LedgerEntry) -> bool:
        """Records the entry unless its (user, kind, idempotency key) is taken; True if added.

        A concurrent insert of the same key waits for the first to commit and
        then adds nothing, so a retry can never be booked twice.
        """
        entry_id = await self._conn.fetchval(
            f"INSERT INTO ledger_entries ({_ENTRY_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (user_id, kind, idempotency_key) DO NOTHING RETURNING entry_id",
            entry.entry_id,
            entry.user_id,
            entry.kind.value,
            entry.amount.amount_minor,
            entry.amount.currency,
            entry.idempotency_key,
            entry.order_id,
            entry.created_at,
        )
        return entry_id is not None

    async def find_by_key(
        self, user_id: uuid.UUID, kind: EntryKind, idempotency_key: str
    ) -> LedgerEntry | None:
        row = await self._conn.fetchrow(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger_entries"
            " WHERE user_id = $1 AND kind = $2 AND idempotency_key = $3",
            user_id,
            kind.value,
            idempotency_key,
        )
        return _entry(row) if row else None

    async def add(self, entry: LedgerEntry) -> None:
        """Books an order's charge or refund; the unique indexes refuse a second one."""
        await self._conn.execute(
            f"INSERT INTO ledger_entries ({_ENTRY_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            entry.entry_id,
            entry.user_id,
            entry.kind.value,
            entry.amount.amount_minor,
            entry.amount.currency,
            entry.idempotency_key,
            entry.order_id,
            entry.created_at,
        )


class PostgresPaymentRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def get(self, order_id: uuid.UUID) -> Payment | None:
        row = await self._conn.fetchrow(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE order_id = $1", order_id
        )
        return _payment(row) if row else None

    async def lock(self, order_id: uuid.UUID) -> Payment | None:
        """The record, locked until commit, so no other handler decides for this order meanwhile."""
        row = await self._conn.fetchrow(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 FOR UPDATE", order_id
        )
        return _payment(row) if row else None

    async def claim(self, payment: Payment) -> bool:
        """Inserts the order's first record; False if the order already has one.

        A concurrent claim of the same order waits for the first transaction
        and then inserts nothing, so exactly one delivery gets to decide.
        """
        amount = payment.amount
        claimed = await self._conn.fetchval(
            f"INSERT INTO payments ({_PAYMENT_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (order_id) DO NOTHING RETURNING true",
            payment.order_id,
            payment.user_id,
            payment.state.value,
            amount.amount_minor if amount else None,
            amount.currency if amount else None,
            payment.reason,
            payment.charge_id,
            payment.refund_id,
            payment.created_at,
            payment.updated_at,
        )
        return claimed is not None

    async def move(self, source: PaymentState, payment: Payment) -> None:
        """Stores ``payment``'s new state over the record, which must still be in ``source``."""
        status = await self._conn.execute(
            "UPDATE payments SET state = $3, reason = $4, charge_id = $5, refund_id = $6,"
            " updated_at = $7 WHERE order_id = $1 AND state = $2",
            payment.order_id,
            source.value,
            payment.state.value,
            payment.reason,
            payment.charge_id,
            payment.refund_id,
            payment.updated_at,
        )
        if status != "UPDATE 1":
            # The caller holds the record (claimed or locked), so this is a bug, not a race.
            raise RuntimeError(
                f"payment for order {payment.order_id} was not {source.value} ({status})"
            )


class PostgresPaymentUnitOfWork(PostgresUnitOfWork):
    wallets: PostgresWalletRepository
    ledger: PostgresLedgerRepository
    payments: PostgresPaymentRepository

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool, publishing=publication)

    def bind(self, connection: PoolConnectionProxy) -> None:
        self.wallets = PostgresWalletRepository(connection)
        self.ledger = PostgresLedgerRepository(connection)
        self.payments = PostgresPaymentRepository(connection)


def unit_of_work_factory(pool: asyncpg.Pool) -> Callable[[], PostgresPaymentUnitOfWork]:
    return lambda: PostgresPaymentUnitOfWork(pool)

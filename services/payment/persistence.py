"""The wallet and ledger repositories and the unit of work over asyncpg."""

from __future__ import annotations

import uuid

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.payment.domain import MAX_BALANCE_MINOR, EntryKind, LedgerEntry, Wallet
from shared.db.unit_of_work import PostgresUnitOfWork
from shared.money import Money

_WALLET_COLUMNS = "user_id, balance_minor, currency, updated_at"
_ENTRY_COLUMNS = (
    "entry_id, user_id, kind, amount_minor, currency, idempotency_key, order_id, created_at"
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


class WalletRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def get(self, user_id: uuid.UUID) -> Wallet | None:
        row = await self._conn.fetchrow(
            f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE user_id = $1", user_id
        )
        return _wallet(row) if row else None

    async def open(self, user_id: uuid.UUID, currency: str) -> None:
        """Creates an empty wallet unless the user already has one."""
        await self._conn.execute(
            "INSERT INTO wallets (user_id, balance_minor, currency, updated_at)"
            " VALUES ($1, 0, $2, now()) ON CONFLICT (user_id) DO NOTHING",
            user_id, currency,
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
            user_id, amount.amount_minor, amount.currency, MAX_BALANCE_MINOR,
        )
        return _wallet(row) if row else None


class LedgerRepository:
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
            entry.entry_id, entry.user_id, entry.kind.value, entry.amount.amount_minor,
            entry.amount.currency, entry.idempotency_key, entry.order_id, entry.created_at,
        )
        return entry_id is not None

    async def find_by_key(
        self, user_id: uuid.UUID, kind: EntryKind, idempotency_key: str
    ) -> LedgerEntry | None:
        row = await self._conn.fetchrow(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger_entries"
            " WHERE user_id = $1 AND kind = $2 AND idempotency_key = $3",
            user_id, kind.value, idempotency_key,
        )
        return _entry(row) if row else None


class PaymentUnitOfWork(PostgresUnitOfWork):
    wallets: WalletRepository
    ledger: LedgerRepository

    def bind(self, connection: PoolConnectionProxy) -> None:
        self.wallets = WalletRepository(connection)
        self.ledger = LedgerRepository(connection)

"""Stock rows over asyncpg: the ledger per SKU, and the row locks a batch takes first.

Every stock change is a conditional UPDATE computed against the row as it is
when its lock is taken, never a value read earlier and written back.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.inventory.domain import Stock

_COLUMNS = "sku, available, reserved, sold, total_received, updated_at"


def _stock(row: asyncpg.Record) -> Stock:
    return Stock(
        sku=row["sku"],
        available=row["available"],
        reserved=row["reserved"],
        sold=row["sold"],
        total_received=row["total_received"],
        updated_at=row["updated_at"],
    )


class PostgresStockRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def set_available(self, sku: str, available: int) -> Stock:
        """Sets available units, booking the difference as received (or written off).

        One statement, so the delta is computed against the row as it is when
        the lock is taken: concurrent setters and reservations cannot slip in
        between a read and a write and unbalance the ledger.
        """
        row = await self._conn.fetchrow(
            f"INSERT INTO stock AS s ({_COLUMNS})"
            " VALUES ($1, $2, 0, 0, $2, now())"
            " ON CONFLICT (sku) DO UPDATE SET"
            "   total_received = s.total_received + (EXCLUDED.available - s.available),"
            "   available = EXCLUDED.available,"
            "   updated_at = EXCLUDED.updated_at"
            f" RETURNING {_COLUMNS}",
            sku,
            available,
        )
        assert row is not None  # an upsert with RETURNING always yields its row
        return _stock(row)

    async def get(self, sku: str) -> Stock | None:
        row = await self._conn.fetchrow(f"SELECT {_COLUMNS} FROM stock WHERE sku = $1", sku)
        return _stock(row) if row else None

    async def lock_in_order(self, skus: Collection[str], order_ids: Collection[uuid.UUID]) -> None:
        """Locks the stock rows of ``skus`` and of these orders' reservations, in SKU order:
        the one order every batch takes them in."""
        await self._conn.execute(
            "SELECT 1 FROM stock WHERE sku IN ("
            "   SELECT unnest($1::text[])"
            "   UNION SELECT sku FROM reservation_lines WHERE order_id = ANY($2::uuid[]))"
            " ORDER BY sku FOR UPDATE OF stock",
            sorted(skus),
            sorted(order_ids),
        )

    async def get_many(self, skus: list[str]) -> list[Stock]:
        rows = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku", skus
        )
        return [_stock(r) for r in rows]

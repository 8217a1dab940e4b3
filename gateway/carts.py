"""Carts: the gateway's own state (a backend-for-frontend's), one per signed-in user.

A line is a SKU with the product it names and a quantity. The services know nothing of
carts: an order placed from the cart is a PlaceOrder of its lines, and the cart is
emptied once the order is placed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from shared.errors import InvalidArgument

# PlaceOrder's own limits: 1..50 distinct products, 1..100 units each.
MAX_LINES = 50
MAX_QUANTITY = 100


@dataclass(frozen=True)
class CartLine:
    sku: str
    product_id: str
    quantity: int


class CartStore(Protocol):
    async def lines(self, user_id: uuid.UUID) -> list[CartLine]: ...
    async def put(self, user_id: uuid.UUID, line: CartLine) -> None: ...
    async def replace(self, user_id: uuid.UUID, lines: Sequence[CartLine]) -> None: ...
    async def remove(self, user_id: uuid.UUID, sku: str) -> bool: ...
    async def clear(self, user_id: uuid.UUID) -> None: ...


def too_many_lines() -> InvalidArgument:
    return InvalidArgument("items", f"a cart holds at most {MAX_LINES} products")


class PostgresCartStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def lines(self, user_id: uuid.UUID) -> list[CartLine]:
        rows = await self._pool.fetch(
            "SELECT sku, product_id, quantity FROM cart_items WHERE user_id = $1"
            " ORDER BY added_at, sku",
            user_id,
        )
        return [CartLine(r["sku"], str(r["product_id"]), r["quantity"]) for r in rows]

    async def put(self, user_id: uuid.UUID, line: CartLine) -> None:
        """Adds the line, or sets the quantity of the SKU's line."""
        async with self._pool.acquire() as conn, conn.transaction():
            # One cart changes one request at a time: the count below stays true.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", str(user_id))
            count = await conn.fetchval(
                "SELECT count(*) FROM cart_items WHERE user_id = $1 AND sku <> $2",
                user_id,
                line.sku,
            )
            if count >= MAX_LINES:
                raise too_many_lines()
            await conn.execute(
                "INSERT INTO cart_items (user_id, sku, product_id, quantity)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, sku)"
                " DO UPDATE SET product_id = EXCLUDED.product_id, quantity = EXCLUDED.quantity",
                user_id,
                line.sku,
                uuid.UUID(line.product_id),
                line.quantity,
            )

    async def replace(self, user_id: uuid.UUID, lines: Sequence[CartLine]) -> None:
        if len(lines) > MAX_LINES:
            raise too_many_lines()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", str(user_id))
            await conn.execute("DELETE FROM cart_items WHERE user_id = $1", user_id)
            await conn.executemany(
                "INSERT INTO cart_items (user_id, sku, product_id, quantity)"
                " VALUES ($1, $2, $3, $4)",
                [(user_id, x.sku, uuid.UUID(x.product_id), x.quantity) for x in lines],
            )

    async def remove(self, user_id: uuid.UUID, sku: str) -> bool:
        status: str = await self._pool.execute(
            "DELETE FROM cart_items WHERE user_id = $1 AND sku = $2", user_id, sku
        )
        return status != "DELETE 0"

    async def clear(self, user_id: uuid.UUID) -> None:
        await self._pool.execute("DELETE FROM cart_items WHERE user_id = $1", user_id)

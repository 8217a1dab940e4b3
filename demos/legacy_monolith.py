"""THE DESIGN BEFORE THE FIX. Demo only: never imported by a service.

This is the seed's case study (ch. 5) in a dozen lines: stock lived inside the
catalog service, and placing an order read the stock, decided, and then wrote
the stock back as a separate step. Two buyers who read "1 left" at the same
time both buy it. Nothing here is wrong line by line; the bug is the gap
between the check and the act. The fix is services/inventory: one conditional
UPDATE (``... WHERE available >= q``) driven by events, with no gap at all.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

SCHEMA = """
CREATE TABLE IF NOT EXISTS legacy_catalog (sku text PRIMARY KEY, stock int NOT NULL,
                                           received int NOT NULL);
CREATE TABLE IF NOT EXISTS legacy_orders (order_id uuid PRIMARY KEY, sku text NOT NULL,
                                          quantity int NOT NULL, status text NOT NULL);
"""


async def prepare(pool: asyncpg.Pool, sku: str, stock: int) -> None:
    await pool.execute(SCHEMA)
    await pool.execute("INSERT INTO legacy_catalog VALUES ($1, $2, $2)", sku, stock)


async def place_order_check_then_act(pool: asyncpg.Pool, sku: str, quantity: int = 1) -> str:
    """The oversell bug, on purpose: check, then (later) act on what was checked."""
    async with pool.acquire() as conn:
        stock = await conn.fetchval("SELECT stock FROM legacy_catalog WHERE sku = $1", sku)
        if stock < quantity:
            return "rejected"
        await asyncio.sleep(0.005)  # pricing, a payment call... the window where others read too
        await conn.execute(
            "UPDATE legacy_catalog SET stock = $2 WHERE sku = $1", sku, stock - quantity
        )
        await conn.execute(
            "INSERT INTO legacy_orders VALUES ($1, $2, $3, 'confirmed')",
            uuid.uuid4(),
            sku,
            quantity,
        )
        return "confirmed"

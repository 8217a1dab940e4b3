"""Migration 0005 (``orders.step``) on the real PostgreSQL: orders already there get the
step their status shows, the column takes only the known steps, and the WatchOrder
trigger now notifies on a step change as on a status change, and on nothing else.

A database of its own (``shop_order_step``), migrated to 0004 and given orders of every
kind before 0005 runs, as an upgrade of a running system would find them.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from asyncpg.pool import PoolConnectionProxy

from devstack import launcher
from devstack.stack import Stack
from services.order.adapters.watch_hub import CHANNEL
from services.order.main import SERVICE as ORDER
from shared.db.migrations import apply_migrations
from shared.messaging.outbox import MIGRATIONS as MESSAGING_MIGRATIONS

pytestmark = pytest.mark.integration

DATABASE = "shop_order_step"
MIGRATION = "0005_saga_step"
# (status, status_reason) of the orders there before the migration, and the step each gets.
BEFORE = {
    ("pending", ""): "placed",
    ("confirmed", ""): "committed",
    ("rejected", "out of stock: SKU-1"): "placed",
    ("cancelled", "payment failed: insufficient funds"): "reserved",
    ("cancelled", "cancelled by customer"): "placed",
    ("cancelled", "saga timed out"): "placed",
}


@dataclass
class Upgraded:
    pool: asyncpg.Pool
    applied: list[str]
    orders: dict[uuid.UUID, tuple[str, str]]  # order id -> (status, reason) before


async def insert_order(
    conn: asyncpg.Connection | PoolConnectionProxy, status: str, reason: str
) -> uuid.UUID:
    order_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO orders (order_id, user_id, status, total_minor, currency,"
        " idempotency_key, status_reason, placed_clock) VALUES ($1, $2, $3, 500, 'USD', $4, $5, 0)",
        order_id,
        uuid.uuid4(),
        status,
        f"k-{order_id.hex}",
        reason,
    )
    return order_id


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def upgraded(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Upgraded]:
    dsn = await launcher.recreate_database(stack, DATABASE)
    await apply_migrations(dsn, MESSAGING_MIGRATIONS)
    older = Path(tmp_path_factory.mktemp("order-migrations"))
    for path in sorted(ORDER.migrations.glob("*.sql")):
        if path.stem < MIGRATION:
            shutil.copy(path, older / path.name)
    assert len(await apply_migrations(dsn, older)) == 4
    conn = await asyncpg.connect(dsn)
    try:
        orders = {await insert_order(conn, *kind): kind for kind in BEFORE}
    finally:
        await conn.close()
    applied = await apply_migrations(dsn, ORDER.migrations)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield Upgraded(pool, applied, orders)
    finally:
        await pool.close()


async def step_of(pool: asyncpg.Pool, order_id: uuid.UUID) -> str:
    return str(await pool.fetchval("SELECT step FROM orders WHERE order_id = $1", order_id))


async def test_orders_already_there_get_the_step_their_status_shows(upgraded: Upgraded) -> None:
    assert upgraded.applied == [MIGRATION]
    for order_id, kind in upgraded.orders.items():
        assert await step_of(upgraded.pool, order_id) == BEFORE[kind], kind


async def test_a_new_order_is_placed_and_only_known_steps_are_taken(upgraded: Upgraded) -> None:
    async with upgraded.pool.acquire() as conn:
        order_id = await insert_order(conn, "pending", "")
        assert await step_of(upgraded.pool, order_id) == "placed"
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE orders SET step = 'shipped' WHERE order_id = $1", order_id)


async def test_the_watch_trigger_notifies_on_a_step_change_and_nothing_else(
    upgraded: Upgraded,
) -> None:
    async with upgraded.pool.acquire() as writer, upgraded.pool.acquire() as listener:
        order_id = await insert_order(writer, "pending", "")
        heard: asyncio.Queue[str] = asyncio.Queue()

        def hear(
            _conn: asyncpg.Connection | PoolConnectionProxy,
            _pid: int,
            _channel: str,
            payload: object,
        ) -> None:
            heard.put_nowait(str(payload))

        await listener.add_listener(CHANNEL, hear)
        try:

            async def notified_by(sql: str) -> list[str]:
                await writer.execute(f"UPDATE orders SET {sql} WHERE order_id = $1", order_id)
                await writer.execute("SELECT pg_notify($1, 'marker')", CHANNEL)
                got = []  # everything up to the marker, which comes after the UPDATE's
                while (payload := await asyncio.wait_for(heard.get(), 5)) != "marker":
                    got.append(payload)
                return got

            assert await notified_by("step = 'reserved'") == [str(order_id)]
            assert await notified_by("step = 'reserved'") == []  # the same step again
            assert await notified_by("updated_at = now()") == []
            assert await notified_by("step = 'charged', updated_at = now()") == [str(order_id)]
            assert await notified_by(
                "status = 'confirmed', step = 'committed', updated_at = now()"
            ) == [str(order_id)]  # one change, one notification
        finally:
            await listener.remove_listener(CHANNEL, hear)

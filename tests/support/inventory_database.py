"""Inventory's saga against its database: deliveries as the consumer makes them, and
what the tables then say (for tests/integration/test_inventory_saga.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import asyncpg
from google.protobuf.message import Message

from services.inventory.persistence import PostgresInventoryUnitOfWork
from services.inventory.subscriptions import SUBSCRIPTIONS
from shared.messaging.envelope import Event, unwrap
from shop.events.v1 import order_events_pb2
from tests.support.inventory_events import SagaMessage, event_of


def new_sku() -> str:
    return f"SAGA-{uuid.uuid4().hex[:12].upper()}"


async def deliver(pool: asyncpg.Pool, event: Event | SagaMessage) -> None:
    """One delivery in its own unit of work, through the handler SUBSCRIPTIONS names."""
    if not isinstance(event, Event):
        event = event_of(event)
    async with PostgresInventoryUnitOfWork(pool) as uow:
        await SUBSCRIPTIONS.handlers[event.type](uow, event)


async def set_stock(pool: asyncpg.Pool, sku: str, available: int) -> None:
    async with PostgresInventoryUnitOfWork(pool) as uow:
        await uow.stock.set_available(sku, available)


async def stock(pool: asyncpg.Pool, sku: str) -> tuple[int, int, int, int]:
    """(available, reserved, sold, total_received), with the ledger identity asserted."""
    row = await pool.fetchrow(
        "SELECT available, reserved, sold, total_received FROM stock WHERE sku = $1", sku
    )
    assert row is not None, sku
    available, reserved, sold, total = row
    assert available + reserved + sold == total, dict(row)
    return available, reserved, sold, total


async def state(pool: asyncpg.Pool, order_id: str) -> str | None:
    return await pool.fetchval(
        "SELECT state FROM reservations WHERE order_id = $1", uuid.UUID(order_id)
    )


async def state_counts(pool: asyncpg.Pool, orders: list[str]) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT state, count(*) AS n FROM reservations WHERE order_id = ANY($1::uuid[])"
        " GROUP BY state",
        [uuid.UUID(o) for o in orders],
    )
    return {r["state"]: r["n"] for r in rows}


async def emitted(pool: asyncpg.Pool, order_id: str) -> list[str]:
    rows = await pool.fetch("SELECT event_type FROM outbox WHERE key = $1 ORDER BY id", order_id)
    return [r["event_type"].rsplit(".", 1)[1] for r in rows]


async def emitted_payloads(pool: asyncpg.Pool, order_id: str) -> list[Message]:
    rows = await pool.fetch("SELECT payload FROM outbox WHERE key = $1 ORDER BY id", order_id)
    return [unwrap(r["payload"]).payload for r in rows]


async def audit(pool: asyncpg.Pool, skus: Iterable[str]) -> None:
    """The invariants the saga audit checks, for these SKUs, in plain SQL."""
    rows = await pool.fetch(
        """
        SELECT s.sku, s.available, s.reserved, s.sold, s.total_received,
               coalesce(sum(l.quantity) FILTER (WHERE r.state = 'reserved'), 0) AS held,
               coalesce(sum(l.quantity) FILTER (WHERE r.state = 'committed'), 0) AS sold_lines
        FROM stock s
        LEFT JOIN reservation_lines l ON l.sku = s.sku
        LEFT JOIN reservations r ON r.order_id = l.order_id
        WHERE s.sku = ANY($1::text[])
        GROUP BY s.sku
        """,
        list(skus),
    )
    for row in rows:
        assert row["available"] >= 0 and row["reserved"] >= 0, dict(row)
        assert row["available"] + row["reserved"] + row["sold"] == row["total_received"], dict(row)
        assert row["reserved"] == row["held"], dict(row)
        assert row["sold"] == row["sold_lines"], dict(row)


async def deliver_merged(
    pool: asyncpg.Pool, payloads: Sequence[order_events_pb2.OrderCreated]
) -> None:
    """One run of OrderCreated in one unit of work, as the consumer hands it over."""
    async with PostgresInventoryUnitOfWork(pool) as uow:
        await SUBSCRIPTIONS.batch_handlers["shop.events.v1.OrderCreated"](
            uow, [event_of(p) for p in payloads]
        )

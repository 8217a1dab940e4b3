"""After an edge fuzz run: what no single request shows, across the databases.

- the audit (ops/audit.py) over inventory, order and payment is clean (the saga does not
  run under the fuzzer, so an order may stay pending as long as the run lasts);
- nothing is half-written: every order has its ``OrderCreated`` event in the outbox, and
  every cancelled one its ``OrderCancelled``; no Idempotency-Key is left ``in_flight``,
  and every ``done`` one has the answer it replays; no cart holds more lines than
  ``gateway.carts.MAX_LINES``, nor a line whose product is not in the catalog under
  that SKU.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from devstack.audit import stack_dsns
from devstack.stack import Stack
from gateway.carts import MAX_LINES, MAX_QUANTITY
from ops.audit import AuditReport, audit

# The saga is off under the fuzzer: a pending order is not late, however old.
SAGA_OFF_TIMEOUT = 7 * 86_400.0


async def _fetch(dsn: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def half_written(stack: Stack) -> list[str]:
    """Every sign of a write left half-done; empty when there is none."""
    found = []
    orders = await _fetch(
        stack.pg_dsn("shop_order"),
        "SELECT o.order_id, o.status,"
        " EXISTS (SELECT 1 FROM outbox e WHERE e.key = o.order_id::text"
        "         AND e.event_type = 'shop.events.v1.OrderCreated') AS placed,"
        " EXISTS (SELECT 1 FROM outbox e WHERE e.key = o.order_id::text"
        "         AND e.event_type = 'shop.events.v1.OrderCancelled') AS cancelled"
        " FROM orders o",
    )
    for o in orders:
        if not o["placed"]:
            found.append(f"order {o['order_id']}: no OrderCreated event in the outbox")
        if o["status"] == "cancelled" and not o["cancelled"]:
            found.append(f"order {o['order_id']}: cancelled, no OrderCancelled event")
    gateway = stack.pg_dsn("shop_gateway")
    for row in await _fetch(
        gateway,
        "SELECT user_id, key, status, response_status, response_body IS NULL AS empty"
        " FROM idempotency_keys WHERE status = 'in_flight' OR response_status IS NULL"
        " OR response_body IS NULL",
    ):
        found.append(
            f"Idempotency-Key {row['key']!r} of {row['user_id']}: {row['status']},"
            f" answer {row['response_status']}{' with no body' if row['empty'] else ''}"
        )
    lines = await _fetch(gateway, "SELECT user_id, sku, product_id, quantity FROM cart_items")
    catalog = {
        str(r["product_id"]): r["sku"]
        for r in await _fetch(stack.pg_dsn("shop_product"), "SELECT product_id, sku FROM products")
    }
    per_user: dict[str, int] = {}
    for line in lines:
        user = str(line["user_id"])
        per_user[user] = per_user.get(user, 0) + 1
        if catalog.get(str(line["product_id"])) != line["sku"]:
            found.append(f"cart of {user}: {line['sku']} names product {line['product_id']}")
        if not 1 <= line["quantity"] <= MAX_QUANTITY:
            found.append(f"cart of {user}: {line['sku']} x {line['quantity']}")
    found += [
        f"cart of {user}: {count} lines (at most {MAX_LINES})"
        for user, count in per_user.items()
        if count > MAX_LINES
    ]
    return found


async def audited(stack: Stack) -> AuditReport:
    return await audit(stack_dsns(stack), saga_timeout=SAGA_OFF_TIMEOUT)

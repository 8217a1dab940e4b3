"""Driving the running system the way the saga tests and the benchmark need."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Sequence

import asyncpg

from devstack.audit import stack_dsns
from devstack.stack import Stack
from ops.audit import AuditReport, audit
from ops.shop_client import ShopClient
from shared.auth.identity import Role
from shared.rpc.client import ServiceClients
from tests.support.tokens import TestKeys


async def admin_client(clients: ServiceClients, keys: TestKeys) -> ShopClient:
    return ShopClient(clients, token=keys.token(Role.ADMIN))


async def new_product(
    clients: ServiceClients,
    keys: TestKeys,
    units: int,
    price_minor: int = 1_000,
    prefix: str = "SALE",
) -> tuple[str, str]:
    """A fresh SKU with ``units`` in stock; returns (product id, sku)."""
    admin = await admin_client(clients, keys)
    sku = f"{prefix}-{uuid.uuid4().hex[:8].upper()}"
    product = await admin.create_product(sku, f"{prefix} item", price_minor)
    await admin.set_stock(sku, units)
    return product.product_id, sku


async def funded_buyers(
    clients: ServiceClients, keys: TestKeys, count: int, funds_minor: int
) -> list[ShopClient]:
    """Customers with their own ids and wallets (tokens signed by the test key)."""
    buyers = [
        ShopClient(clients, token=keys.token(Role.CUSTOMER, uuid.uuid4())) for _ in range(count)
    ]
    gate = asyncio.Semaphore(50)

    async def fund(buyer: ShopClient) -> None:
        async with gate:
            await buyer.top_up(funds_minor, idempotency_key="e2e-funds")

    await asyncio.gather(*(fund(b) for b in buyers))
    return buyers


async def place_one_each(buyers: Sequence[ShopClient], items: list[tuple[str, int]]) -> list[str]:
    """Every buyer places one order at once; returns the order ids."""
    orders = await asyncio.gather(*(b.place_order(items, str(uuid.uuid4())) for b in buyers))
    return [o.order_id for o in orders]


async def order_statuses(stack: Stack, order_ids: Sequence[str]) -> Counter[str]:
    conn = await asyncpg.connect(stack.pg_dsn("shop_order"))
    try:
        rows = await conn.fetch(
            "SELECT status, count(*) AS n FROM orders WHERE order_id = ANY($1::uuid[])"
            " GROUP BY status",
            list(order_ids),
        )
    finally:
        await conn.close()
    return Counter({r["status"]: int(r["n"]) for r in rows})


async def wait_until_terminal(
    stack: Stack, order_ids: Sequence[str], timeout: float = 90.0
) -> Counter[str]:
    """Status counts once no order is pending (or the last counts at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await order_statuses(stack, order_ids)
        if counts["pending"] == 0 or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.25)


async def settled_audit(stack: Stack, settle: float = 30.0) -> AuditReport:
    return await audit(stack_dsns(stack), settle=settle)

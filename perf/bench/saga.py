"""The steady saga at a fixed rate (open loop), timed from each order's scheduled
PlaceOrder to its terminal state as the order service recorded it.

One pool of funded buyers serves every run, so a ramp of rates does not spend its
time topping up thousands of wallets; each run sells its own SKU with stock for all
of its orders (none should be rejected for stock). Also here: waiting until no saga is
pending (a run must not share the machine with the last one's backlog), and where a
saga's time goes, hop by hop, from each service's own timestamps.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import grpc
import numpy as np

from devstack.stack import Stack
from ops.shop_client import ShopClient
from shared.auth.identity import Role
from shared.auth.tokens import TokenIssuer
from shared.rpc.client import ServiceClients

T = TypeVar("T")

PRICE_MINOR = 100
FUNDS_MINOR = 10_000_000  # a buyer's wallet: enough for every order of every run
# How long a run's orders are followed after its last arrival before the rest count
# as not terminal (a run that does not keep up is measured, not waited out).
FOLLOW_SECONDS = 30.0


async def bounded(coros: list[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def run(coro: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


def buyers_of(clients: ServiceClients, issuer: TokenIssuer, count: int) -> list[ShopClient]:
    return [
        ShopClient(clients, token=issuer.issue(uuid.uuid4(), Role.CUSTOMER)[0])
        for _ in range(count)
    ]


@dataclass
class Shop:
    """An admin and a pool of funded buyers, made once per system."""

    clients: ServiceClients
    admin: ShopClient
    buyers: list[ShopClient]

    @classmethod
    async def open(cls, clients: ServiceClients, issuer: TokenIssuer, count: int) -> Shop:
        admin = ShopClient(clients, token=issuer.issue(uuid.uuid4(), Role.ADMIN)[0])
        pool = buyers_of(clients, issuer, count)
        await bounded([b.top_up(FUNDS_MINOR, f"bench-{uuid.uuid4()}") for b in pool], 64)
        return cls(clients, admin, pool)

    async def new_product(self, prefix: str, stock: int) -> str:
        sku = f"{prefix}-{uuid.uuid4().hex[:6].upper()}"
        product = await self.admin.create_product(sku, f"{prefix.lower()} item", PRICE_MINOR)
        await self.admin.set_stock(sku, stock)
        return product.product_id


async def steady_saga(
    stack: Stack, shop: Shop, rate: float, seconds: float
) -> tuple[dict[str, Any], list[str]]:
    """P50/P95/P99 of ``rate`` orders/s for ``seconds``, how many reached a terminal state;
    and the ids of the orders placed."""
    count = max(1, int(rate * seconds))
    product_id = await shop.new_product("STEADY", count)
    loop = asyncio.get_running_loop()
    started: dict[str, datetime] = {}
    refused: list[str] = []
    buyers = itertools.cycle(shop.buyers)
    t0 = loop.time() + 0.1

    async def place(i: int, buyer: ShopClient) -> None:
        await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        scheduled = datetime.now(UTC)  # latency counts from the schedule (open loop)
        try:
            order = await buyer.place_order([(product_id, 1)], str(uuid.uuid4()))
        except grpc.aio.AioRpcError as error:  # an overloaded system refuses: counted
            refused.append(error.code().name)
            return
        started[order.order_id] = scheduled

    await asyncio.gather(*(place(i, b) for i, b in zip(range(count), buyers, strict=False)))
    rows = await follow(stack, list(started), time.monotonic() + FOLLOW_SECONDS)
    latencies = np.array(
        [
            (r["updated_at"] - started[str(r["order_id"])]).total_seconds() * 1000
            for r in rows
            if r["status"] != "pending"
        ]
    )
    states: dict[str, int] = {}
    for r in rows:
        states[r["status"]] = states.get(r["status"], 0) + 1
    figures: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "orders": count,
        "refused": len(refused),
        "terminal": len(latencies),
        "states": states,
    }
    if len(latencies):
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        figures |= {
            "p50_ms": round(float(p50), 1),
            "p95_ms": round(float(p95), 1),
            "p99_ms": round(float(p99), 1),
            "max_ms": round(float(latencies.max()), 1),
        }
    return figures, list(started)


async def follow(stack: Stack, order_ids: list[str], deadline: float) -> list[asyncpg.Record]:
    """The orders' rows once none is pending, or as they are at ``deadline``."""
    conn = await asyncpg.connect(stack.pg_dsn("shop_order"))
    try:
        while True:
            rows = await conn.fetch(
                "SELECT order_id, status, updated_at FROM orders WHERE order_id = ANY($1::uuid[])",
                order_ids,
            )
            if all(r["status"] != "pending" for r in rows) or time.monotonic() > deadline:
                return list(rows)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def wait_sagas_ended(stack: Stack, timeout: float = 180) -> float:
    """Until no order is pending (the hot SKU's sagas still charge and commit after their
    reservations): the latency run must not share the machine with that backlog."""
    conn = await asyncpg.connect(stack.pg_dsn("shop_order"))
    began = time.monotonic()
    try:
        while await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'pending'"):
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"orders still pending after {timeout:g}s")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return time.monotonic() - began


async def saga_hops(stack: Stack, order_ids: list[str]) -> dict[str, tuple[float, float]]:
    """Where a saga's time goes: P50/P95 of each hop, from each service's own timestamps."""
    ids = [uuid.UUID(o) for o in order_ids]
    times: dict[str, dict[uuid.UUID, datetime]] = {}
    in_ids = "= ANY($1::uuid[])"
    queries = {
        "shop_order": {
            "placed": f"SELECT order_id AS id, created_at AS t FROM orders WHERE order_id {in_ids}",
            "OrderCreated published": "SELECT key::uuid AS id, sent_at AS t FROM outbox"
            f" WHERE event_type LIKE '%OrderCreated' AND key::uuid {in_ids}",
            "terminal": "SELECT order_id AS id, updated_at AS t FROM orders"
            f" WHERE order_id {in_ids}",
        },
        "shop_inventory": {
            "reserved": f"SELECT order_id AS id, created_at AS t FROM reservations"
            f" WHERE order_id {in_ids}",
            "committed": f"SELECT order_id AS id, updated_at AS t FROM reservations"
            f" WHERE order_id {in_ids}",
        },
        "shop_payment": {
            "charged": "SELECT order_id AS id, created_at AS t FROM payments"
            f" WHERE order_id {in_ids}",
        },
    }
    for db, named in queries.items():
        conn = await asyncpg.connect(stack.pg_dsn(db))
        try:
            for name, sql in named.items():
                times[name] = {r["id"]: r["t"] for r in await conn.fetch(sql, ids)}
        finally:
            await conn.close()
    steps = ["placed", "OrderCreated published", "reserved", "charged", "committed", "terminal"]
    hops: dict[str, tuple[float, float]] = {}
    for a, b in itertools.pairwise(steps):
        gaps = [
            (times[b][i] - times[a][i]).total_seconds() * 1000
            for i in ids
            if times[a].get(i) and times[b].get(i)
        ]
        if gaps:
            p50, p95 = np.percentile(gaps, [50, 95])
            hops[f"{a} -> {b}"] = (float(p50), float(p95))
    return hops

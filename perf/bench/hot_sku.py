"""P5: how fast the saga sells one hot SKU, against the database's own limit on one row.

1. Baseline: pgbench itself, clients in a loop, each transaction one conditional UPDATE
   of the same row (``... SET available = available - 1 ... WHERE available >= 1``),
   autocommit: exactly the statement a naive reservation would run.
2. Hot-SKU reservations/s through the real pipeline: N orders for one SKU are placed
   while inventory is stopped (their OrderCreated events wait in Kafka), then inventory
   starts and drains them; rate = N / time from the first to the last reservation.
   Zero oversell is checked.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import asyncpg

from devstack.launcher import SystemLauncher
from devstack.stack import Stack
from ops.shop_client import ShopClient
from perf.bench.saga import bounded, buyers_of
from shared.auth.identity import Role
from shared.auth.tokens import TokenIssuer
from shared.rpc.client import ServiceClients

HOT_ROW_SQL = (
    "UPDATE bench_hot_row SET available = available - 1, reserved = reserved + 1"
    " WHERE id = 1 AND available >= 1;\n"
)


def pgbench_binary() -> str:
    found = shutil.which("pgbench") or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))), None
    )
    if found is None:
        raise SystemExit("pgbench not found (it ships with PostgreSQL's server package)")
    return found


async def hot_row_baseline(stack: Stack, clients: int, seconds: int) -> float:
    """Transactions/s of pgbench running the single conditional UPDATE on one row."""
    dsn = stack.pg_dsn("shop_inventory")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS bench_hot_row;"
            " CREATE TABLE bench_hot_row (id int PRIMARY KEY, available bigint NOT NULL"
            " CHECK (available >= 0), reserved bigint NOT NULL);"
            " INSERT INTO bench_hot_row VALUES (1, 1000000000, 0)"
        )
    finally:
        await conn.close()
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(HOT_ROW_SQL)
        script.flush()
        result = await asyncio.to_thread(
            subprocess.run,
            [
                pgbench_binary(),
                "-n",
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(seconds),
                "-f",
                script.name,
                dsn,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{result.stdout}\n{result.stderr}")
    return float(match.group(1))


async def hot_sku_throughput(
    stack: Stack,
    launcher: SystemLauncher,
    clients: ServiceClients,
    issuer: TokenIssuer,
    orders: int,
) -> dict[str, float]:
    admin = ShopClient(clients, token=issuer.issue(uuid.uuid4(), Role.ADMIN)[0])
    sku = f"HOT-{uuid.uuid4().hex[:6].upper()}"
    product = await admin.create_product(sku, "hot item", 100)
    await admin.set_stock(sku, orders // 2)  # half of them must be rejected, none oversold
    shoppers = buyers_of(clients, issuer, orders)
    await bounded([s.top_up(100, "bench") for s in shoppers], 64)
    stopped = [p for p in launcher.processes if p.service == "inventory"]
    for child in stopped:
        child.process.terminate()
        await child.process.wait()
        launcher.processes.remove(child)
    await bounded(
        [s.place_order([(product.product_id, 1)], str(uuid.uuid4())) for s in shoppers], 64
    )
    for child in stopped:  # as many as there were, so every replica takes its share
        await launcher.start_instance("inventory", child.index)
    conn = await asyncpg.connect(stack.pg_dsn("shop_inventory"))
    try:
        while (
            await conn.fetchval("SELECT count(*) FROM reservation_lines WHERE sku = $1", sku)
            < orders
        ):
            await asyncio.sleep(0.2)
        span = await conn.fetchrow(
            "SELECT min(r.created_at), max(r.updated_at) FROM reservations r"
            " JOIN reservation_lines l USING (order_id) WHERE l.sku = $1",
            sku,
        )
        stock = await conn.fetchrow("SELECT * FROM stock WHERE sku = $1", sku)
    finally:
        await conn.close()
    assert stock is not None and span is not None
    first, last = span
    seconds = max((last - first).total_seconds(), 1e-3)
    return {
        "orders": orders,
        "seconds": seconds,
        "per_second": orders / seconds,
        "sold_plus_reserved": stock["sold"] + stock["reserved"],
        "received": stock["total_received"],
        "oversold": max(0, stock["sold"] + stock["reserved"] - stock["total_received"]),
    }

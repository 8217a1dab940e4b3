"""`make bench`: how fast the saga sells one hot SKU, and how long a saga takes.

Prints figures; asserts nothing about speed (a timed test would be flaky on a
shared 2-core machine). Runs on its own stack (devstack profile "bench") with
its own instance of every service, so a `make run` session is never touched.

1. Baseline: the database's own limit on one hot row, measured with pgbench
   itself: clients in a loop, each transaction one conditional UPDATE of the
   same row (`... SET available = available - 1 ... WHERE available >= 1`),
   autocommit, exactly the statement a naive reservation would run.
2. Hot-SKU reservations/s through the real pipeline: N orders for one SKU are
   placed while inventory is stopped (their OrderCreated events wait in Kafka),
   then inventory starts and drains them; rate = N / time from the first to the
   last reservation. Zero oversell is checked, and the audit must be clean.
3. Saga latency: orders at a fixed rate (open loop), each timed from its
   scheduled PlaceOrder to its terminal status; P50/P95/P99.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import grpc
import numpy as np
import typer

from devstack.stack import Stack
from shared.auth.identity import Role
from shared.auth.keys import generate_keypair, load_private_key
from shared.auth.tokens import TokenIssuer
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS
from tools.audit import audit, stack_dsns
from tools.launcher import SystemLauncher, open_directory, wipe_system_data
from tools.shop_client import ShopClient

T = TypeVar("T")
# Issue 10's goal for the saga at 50 orders/s, the provider at its default latency.
SAGA_P95_GOAL_MS = 300
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


def buyers(clients: ServiceClients, issuer: TokenIssuer, count: int) -> list[ShopClient]:
    return [
        ShopClient(clients, token=issuer.issue(uuid.uuid4(), Role.CUSTOMER)[0])
        for _ in range(count)
    ]


async def bounded(coros: list[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def run(coro: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


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
    shoppers = buyers(clients, issuer, orders)
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


async def saga_latency(
    stack: Stack, clients: ServiceClients, issuer: TokenIssuer, rate: float, seconds: float
) -> dict[str, Any]:
    admin = ShopClient(clients, token=issuer.issue(uuid.uuid4(), Role.ADMIN)[0])
    count = int(rate * seconds)
    sku = f"STEADY-{uuid.uuid4().hex[:6].upper()}"
    product = await admin.create_product(sku, "steady item", 100)
    await admin.set_stock(sku, count)
    shoppers = buyers(clients, issuer, count)
    await bounded([s.top_up(100, "bench") for s in shoppers], 64)
    started: dict[str, datetime] = {}
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    failed: list[str] = []

    async def place(i: int, shopper: ShopClient) -> None:
        await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        scheduled = datetime.now(UTC)  # latency counts from the schedule (open loop)
        try:
            order = await shopper.place_order([(product.product_id, 1)], str(uuid.uuid4()))
        except grpc.aio.AioRpcError as error:  # an overloaded system refuses: counted
            failed.append(error.code().name)
            return
        started[order.order_id] = scheduled

    await asyncio.gather(*(place(i, s) for i, s in enumerate(shoppers)))
    conn = await asyncpg.connect(stack.pg_dsn("shop_order"))
    try:
        deadline = time.monotonic() + 60
        while True:
            rows = await conn.fetch(
                "SELECT order_id, status, updated_at FROM orders WHERE order_id = ANY($1::uuid[])",
                list(started),
            )
            if all(r["status"] != "pending" for r in rows) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    latencies = np.array(
        [
            (r["updated_at"] - started[str(r["order_id"])]).total_seconds() * 1000
            for r in rows
            if r["status"] != "pending"
        ]
    )
    if not len(latencies):
        raise RuntimeError(f"no order of {count} ended ({len(failed)} refused: {set(failed)})")
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "orders": count,
        "refused": len(failed),
        "rate": rate,
        "completed": len(latencies),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": float(latencies.max()),
        "order_ids": list(started),
    }


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


async def run(
    orders: int, rate: float, seconds: float, pgbench_clients: int, hot_sku: bool = True
) -> None:
    stack = Stack("bench")
    print("bench: starting its own stack (profile bench) ...", flush=True)
    await asyncio.to_thread(stack.up)
    await wipe_system_data(stack)
    jwt_dir = stack.profile_dir / "jwt"
    generate_keypair(jwt_dir)
    issuer = TokenIssuer(
        load_private_key(jwt_dir / "private.pem"),
        "shop-user",
        "shop",
        ttl=timedelta(hours=1),
    )
    log_path = stack.profile_dir / "logs" / "services.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    service_log = log_path.open("w")
    launcher = SystemLauncher(stack, jwt_dir, log_sink=lambda line: print(line, file=service_log))
    print(f"bench: service logs in {log_path}", flush=True)
    # The stack goes down after the directory is closed, so its watch sees no outage.
    try:
        async with open_directory(stack) as directory:
            clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
            try:
                await launcher.start_all()
                await launcher.wait_ready(directory, timeout=90)
                print(
                    f"baseline: pgbench, {pgbench_clients} clients, one conditional UPDATE on one"
                    " row per transaction ...",
                    flush=True,
                )
                if hot_sku:
                    baseline = await hot_row_baseline(stack, pgbench_clients, 10)
                    print(f"  {baseline:,.0f} transactions/s", flush=True)
                    print(
                        f"hot SKU: {orders} orders for {orders // 2} units,"
                        " drained by inventory ...",
                        flush=True,
                    )
                    hot = await hot_sku_throughput(stack, launcher, clients, issuer, orders)
                    print(
                        f"  {hot['per_second']:,.0f} reservations/s ({hot['orders']:.0f} in "
                        f"{hot['seconds']:.2f}s); oversold={hot['oversold']:.0f}",
                        flush=True,
                    )
                    drained = await wait_sagas_ended(stack)
                    print(f"  its sagas all ended {drained:.1f}s later", flush=True)
                print(
                    f"saga latency: {rate:g} orders/s for {seconds:g}s, open loop ...", flush=True
                )
                lat = await saga_latency(stack, clients, issuer, rate, seconds)
                print(
                    f"  completed {lat['completed']:.0f}/{lat['orders']:.0f}"
                    f" ({lat['refused']} refused):"
                    f" P50 {lat['p50_ms']:.0f} ms, P95 {lat['p95_ms']:.0f} ms,"
                    f" P99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms",
                    flush=True,
                )
                for hop, (p50, p95) in (await saga_hops(stack, lat["order_ids"])).items():
                    print(f"    {hop:<36} P50 {p50:6.0f} ms   P95 {p95:6.0f} ms")
                report = await audit(stack_dsns(stack), settle=30)
                print(f"audit: {'ok' if report.ok else 'FAILED'}")
                if not report.ok:
                    print(report.render())
                if hot_sku:
                    ratio = hot["per_second"] / baseline
                    print(
                        f"\nhot-SKU reservations/s vs one-row UPDATE baseline: {ratio:.2f}x "
                        f"({'meets' if ratio >= 1 else 'below'} the goal of >= 1x), "
                        f"oversold={hot['oversold']:.0f}"
                    )
                p95 = lat["p95_ms"]
                print(
                    f"saga P95 at {rate:g} orders/s: {p95:.0f} ms (goal <= {SAGA_P95_GOAL_MS} ms at"
                    f" 50/s, issue 10) {'met' if p95 <= SAGA_P95_GOAL_MS else 'NOT met'}"
                )
            finally:
                await clients.close()
                await launcher.stop_all()
                service_log.close()
    finally:
        await asyncio.to_thread(stack.down)


def main(
    orders: Annotated[int, typer.Option(help="orders for the hot SKU")] = 4000,
    rate: Annotated[float, typer.Option(help="orders/s for the latency run")] = 50.0,
    seconds: Annotated[float, typer.Option(help="length of the latency run")] = 20.0,
    pgbench_clients: Annotated[int, typer.Option(help="pgbench clients")] = 8,
    hot_sku: Annotated[bool, typer.Option(help="run the baseline and hot-SKU parts")] = True,
) -> None:
    asyncio.run(run(orders, rate, seconds, pgbench_clients, hot_sku))


if __name__ == "__main__":
    typer.run(main)

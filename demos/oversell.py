"""`make demo-oversell`: the same flash sale, before and after inventory was split out.

Runs against the `make run` stack. First the old design (demos/legacy_monolith.py,
check-then-act on stock kept in the catalog, in a scratch database), then the real
system: PlaceOrder through the order service, reservations through Kafka events.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Annotated

import asyncpg
import grpc
import typer

from demos import legacy_monolith
from devstack.audit import stack_dsns
from devstack.stack import Stack
from ops.audit import audit
from ops.seed import ADMIN
from ops.shop_client import ShopClient, connect
from shop.order.v1 import order_pb2

TERMINAL = {
    order_pb2.ORDER_STATUS_CONFIRMED,
    order_pb2.ORDER_STATUS_REJECTED,
    order_pb2.ORDER_STATUS_CANCELLED,
}
PRICE_MINOR = 4_999


@dataclass
class SaleResult:
    confirmed: int
    units_sold: int
    final_stock: int
    received: int
    audit_ok: bool
    audit_text: str

    @property
    def oversold(self) -> int:
        return max(0, self.units_sold - self.received)

    def show(self) -> None:
        print(
            f"  confirmed orders: {self.confirmed}   units sold: {self.units_sold}   "
            f"oversold units: {self.oversold}   final stock: {self.final_stock}"
        )
        print(f"  audit: {self.audit_text}")


async def before(stack: Stack, units: int, buyers: int) -> SaleResult:
    admin = await asyncpg.connect(stack.pg_dsn("postgres"))
    try:
        await admin.execute("DROP DATABASE IF EXISTS shop_legacy_demo WITH (FORCE)")
        await admin.execute("CREATE DATABASE shop_legacy_demo")
    finally:
        await admin.close()
    pool = await asyncpg.create_pool(stack.pg_dsn("shop_legacy_demo"), min_size=20, max_size=50)
    try:
        await legacy_monolith.prepare(pool, "FLASH", units)
        outcomes = await asyncio.gather(
            *(legacy_monolith.place_order_check_then_act(pool, "FLASH") for _ in range(buyers))
        )
        stock = await pool.fetchval("SELECT stock FROM legacy_catalog WHERE sku = 'FLASH'")
        sold = await pool.fetchval("SELECT coalesce(sum(quantity), 0) FROM legacy_orders")
    finally:
        await pool.close()
    confirmed = outcomes.count("confirmed")
    ok = sold <= units and stock + sold == units
    text = (
        "ok"
        if ok
        else (
            f"FAILED: {sold} units sold of {units} received; stock says "
            f"{stock} left, so {stock + sold - units} units exist only on paper"
        )
    )
    return SaleResult(confirmed, int(sold), int(stock), units, ok, text)


async def after(stack: Stack, units: int, buyers: int) -> SaleResult:
    async with connect(stack.etcd_endpoint, stack.tls_dir) as clients:
        admin = ShopClient(clients)
        await admin.login(*ADMIN)
        sku = f"FLASH-{uuid.uuid4().hex[:8].upper()}"
        product = await admin.create_product(sku, "Flash-sale sneaker (demo)", PRICE_MINOR)
        await admin.set_stock(sku, units)

        gate = asyncio.Semaphore(8)  # argon2 is meant to be slow: don't swamp the user service

        async def buyer(i: int) -> ShopClient:
            client = ShopClient(clients)
            async with gate:
                await client.register_or_login(f"flash-buyer-{i}@shop.local", "flash-password-1")
            await client.top_up(PRICE_MINOR, idempotency_key=f"flash-{sku}")
            return client

        shoppers = await asyncio.gather(*(buyer(i) for i in range(buyers)))
        placed = await asyncio.gather(
            *(s.place_order([(product.product_id, 1)], str(uuid.uuid4())) for s in shoppers)
        )
        final = await asyncio.gather(
            *(wait_terminal(s, o.order_id) for s, o in zip(shoppers, placed, strict=True))
        )
        stock = await admin.get_stock(sku)
    confirmed = sum(o.status == order_pb2.ORDER_STATUS_CONFIRMED for o in final)
    report = await audit(stack_dsns(stack), settle=30)
    text = "ok" if report.ok else "FAILED\n" + report.render()
    return SaleResult(confirmed, int(stock.sold), int(stock.available), units, report.ok, text)


async def wait_terminal(client: ShopClient, order_id: str, timeout: float = 60) -> order_pb2.Order:
    deadline = time.monotonic() + timeout
    while True:
        try:
            order = await client.get_order(order_id)
            if order.status in TERMINAL or time.monotonic() > deadline:
                return order
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def run(units: int, buyers: int) -> int:
    stack = Stack("dev")
    print(f"oversell demo: {buyers} buyers, 1 unit each, {units} units in stock\n")
    print("before: stock kept in the catalog, check-then-act (demos/legacy_monolith.py)")
    old = await before(stack, units, buyers)
    old.show()
    print("\nafter: inventory service, conditional reservations driven by Kafka events")
    new = await after(stack, units, buyers)
    new.show()
    print(f"\noversell demo: before oversold={old.oversold} after oversold={new.oversold}")
    return 0 if old.oversold > 0 and new.oversold == 0 and new.audit_ok else 1


def main(
    units: Annotated[int, typer.Option(help="units in stock")] = 20,
    buyers: Annotated[int, typer.Option(help="concurrent buyers, one unit each")] = 200,
) -> None:
    sys.exit(asyncio.run(run(units, buyers)))


if __name__ == "__main__":
    typer.run(main)

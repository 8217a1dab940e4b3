"""The demo catalog, stock, customer and admin: safe to run on every `make run`."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated

import grpc
import typer

from ops.shop_client import ShopClient, connect
from pki.identities import SERVICES
from services.user.adapters.admin import ensure_admin
from shared.rpc.client import ServiceClients
from shared.settings import DEV_TLS_DIR

ADMIN = ("admin@shop.local", "admin-password-1")
CUSTOMER = ("demo@shop.local", "demo-password-1")
CUSTOMER_FUNDS_MINOR = 100_000  # 1000.00 USD
# sku, title, price in minor units, initial stock
CATALOG = [
    ("DEMO-TSHIRT", "Reference T-shirt", 1_999, 100),
    ("DEMO-MUG", "Saga mug", 899, 100),
    ("DEMO-HOODIE", "Outbox hoodie", 4_999, 50),
    ("FLASH-SNEAKER", "Flash-sale sneaker", 12_999, 20),
]


async def seed(clients: ServiceClients, user_dsn: str) -> dict[str, str]:
    """Returns sku → product id."""
    await ensure_admin(user_dsn, *ADMIN)
    admin = ShopClient(clients)
    await admin.login(*ADMIN)
    existing = {p.sku: p.product_id for p in await admin.all_products()}
    for sku, title, price, stock in CATALOG:
        if sku not in existing:
            existing[sku] = (await admin.create_product(sku, title, price)).product_id
        try:
            await admin.get_stock(sku)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            await admin.set_stock(sku, stock)
    customer = ShopClient(clients)
    await customer.register_or_login(*CUSTOMER)
    # The fixed key makes the top-up happen once, however often we seed.
    await customer.top_up(CUSTOMER_FUNDS_MINOR, idempotency_key="seed-demo-wallet")
    return existing


async def seed_when_ready(etcd: str, tls_dir: Path, user_dsn: str, timeout: float) -> int:
    """Waits until every service is registered, then seeds; returns the product count."""
    async with connect(etcd, tls_dir) as clients:
        deadline = time.monotonic() + timeout
        while missing := [s for s in SERVICES if not clients.directory.instances(s)]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not registered after {timeout:g}s: {', '.join(missing)}")
            await asyncio.sleep(1.0)
        return len(await seed(clients, user_dsn))


def main(
    etcd: Annotated[str, typer.Option(envvar="SHOP_ETCD_ENDPOINT")] = "127.0.0.1:12379",
    tls_dir: Annotated[Path, typer.Option(envvar="SHOP_TLS_DIR")] = DEV_TLS_DIR,
    user_dsn: Annotated[str, typer.Option(envvar="SHOP_USER_PG_DSN")] = "",
    timeout: Annotated[float, typer.Option(help="wait this long for the services")] = 300.0,
) -> None:
    """Seed the demo data into a running system (the Kubernetes seed Job runs this)."""
    if not user_dsn:
        raise typer.BadParameter("no user database DSN (--user-dsn or SHOP_USER_PG_DSN)")
    try:
        count = asyncio.run(seed_when_ready(etcd, tls_dir, user_dsn, timeout))
    except (grpc.aio.AioRpcError, TimeoutError) as error:
        detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        print(f"seed: FAILED: {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"seed: demo data in place ({count} products, admin and demo customer)")


if __name__ == "__main__":
    typer.run(main)

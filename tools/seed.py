"""The demo catalog, stock, customer and admin: safe to run on every `make run`."""

from __future__ import annotations

import grpc

from services.user.admin import ensure_admin
from shared.rpc.client import ServiceClients
from tools.shop_client import ShopClient

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

"""The smoke check: the demo customer's order reaches CONFIRMED, then the audit is clean.

``python -m ops.smoke`` is what `make up`'s smoke Job runs in the cluster; the image
test runs ``place_demo_order`` against the containers. It needs the demo data
(``python -m ops.seed``), etcd, the operator certificate and, for the audit, the
inventory, order and payment databases.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated

import grpc
import typer

from ops.audit import audit
from ops.seed import CUSTOMER
from ops.shop_client import ShopClient, connect
from shared.rpc.client import ServiceClients
from shared.settings import DEV_TLS_DIR
from shop.order.v1 import order_pb2

SMOKE_SKU = "DEMO-TSHIRT"


async def place_demo_order(clients: ServiceClients, timeout: float = 60.0) -> order_pb2.Order:
    """One unit of the demo T-shirt as the demo customer; the order once it left PENDING."""
    customer = ShopClient(clients)
    await customer.login(*CUSTOMER)
    products = {p.sku: p.product_id for p in await customer.all_products()}
    order = await customer.place_order([(products[SMOKE_SKU], 1)], str(uuid.uuid4()))
    deadline = time.monotonic() + timeout
    while order.status == order_pb2.ORDER_STATUS_PENDING:
        if time.monotonic() > deadline:
            raise TimeoutError(f"order {order.order_id} still PENDING after {timeout:g}s")
        await asyncio.sleep(0.2)
        order = await customer.get_order(order.order_id)
    return order


async def smoke(etcd: str, tls_dir: Path, audit_dsns: dict[str, str]) -> bool:
    async with connect(etcd, tls_dir) as clients:
        order = await place_demo_order(clients)
    status = order_pb2.OrderStatus.Name(order.status)
    print(f"smoke: order {order.order_id} {status}")
    report = await audit(audit_dsns, settle=10.0)
    print(report.render())
    return order.status == order_pb2.ORDER_STATUS_CONFIRMED and report.ok


def main(
    etcd: Annotated[str, typer.Option(envvar="SHOP_ETCD_ENDPOINT")] = "127.0.0.1:12379",
    tls_dir: Annotated[Path, typer.Option(envvar="SHOP_TLS_DIR")] = DEV_TLS_DIR,
    inventory_dsn: Annotated[str, typer.Option(envvar="SHOP_INVENTORY_PG_DSN")] = "",
    order_dsn: Annotated[str, typer.Option(envvar="SHOP_ORDER_PG_DSN")] = "",
    payment_dsn: Annotated[str, typer.Option(envvar="SHOP_PAYMENT_PG_DSN")] = "",
) -> None:
    """Place the demo customer's order, wait for CONFIRMED, audit; exit 1 otherwise."""
    dsns = {"inventory": inventory_dsn, "order": order_dsn, "payment": payment_dsn}
    if missing := [name for name, dsn in dsns.items() if not dsn]:
        raise typer.BadParameter(f"no DSN for: {', '.join(missing)}")
    try:
        ok = asyncio.run(smoke(etcd, tls_dir, dsns))
    except (grpc.aio.AioRpcError, TimeoutError) as error:
        detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        print(f"smoke: FAILED: {detail}", file=sys.stderr)
        ok = False
    print(f"smoke: {'passed' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    typer.run(main)

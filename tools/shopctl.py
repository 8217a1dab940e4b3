"""shopctl: talk to a running shop from the terminal (services found through etcd).

python -m tools.shopctl products
python -m tools.shopctl place-order --sku DEMO-TSHIRT --quantity 1
python -m tools.shopctl orders
python -m tools.shopctl balance
python -m tools.shopctl keys rotate      (admin: a new token signing key)
python -m tools.shopctl keys list
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Annotated, TypeVar

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from shared.settings import DEV_TLS_DIR
from shop.user.v1 import user_pb2
from tools.seed import ADMIN, CUSTOMER
from tools.shop_client import ShopClient, connect
from tools.table import render_table

T = TypeVar("T")
app = typer.Typer(add_completion=False, help=__doc__)

EtcdOption = Annotated[str, typer.Option(envvar="SHOP_ETCD_ENDPOINT", help="etcd host:port")]
EmailOption = Annotated[str, typer.Option(help="log in as")]
PasswordOption = Annotated[str, typer.Option(help="password")]
# Set once for every command by the callback below: where the operator's certificate is.
tls_dir = DEV_TLS_DIR


@app.callback()
def common_options(
    tls: Annotated[
        Path,
        typer.Option(
            "--tls-dir",
            envvar="SHOP_TLS_DIR",
            help="ca.pem, operator.pem and operator-key.pem: shopctl calls as the operator",
        ),
    ] = DEV_TLS_DIR,
) -> None:
    global tls_dir
    tls_dir = tls


def show(message: Message) -> None:
    typer.echo(json_format.MessageToJson(message, indent=2))


def run(etcd: str, email: str, password: str, action: Callable[[ShopClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with connect(etcd, tls_dir) as clients:
            client = ShopClient(clients)
            await client.login(email, password)
            return await action(client)

    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as error:
        typer.echo(f"error: {error.code().name}: {error.details()}", err=True)
        raise typer.Exit(1) from None


@app.command()
def products(
    etcd: EtcdOption = "127.0.0.1:12379",
    email: EmailOption = CUSTOMER[0],
    password: PasswordOption = CUSTOMER[1],
) -> None:
    """List the catalog."""
    for p in run(etcd, email, password, lambda c: c.all_products()):
        typer.echo(
            f"{p.sku:<16} {p.product_id}  {p.price.amount_minor / 100:>9.2f} "
            f"{p.price.currency}  {p.title}"
        )


@app.command("place-order")
def place_order(
    sku: Annotated[str, typer.Option(help="product SKU")],
    quantity: Annotated[int, typer.Option(help="units")] = 1,
    etcd: EtcdOption = "127.0.0.1:12379",
    email: EmailOption = CUSTOMER[0],
    password: PasswordOption = CUSTOMER[1],
) -> None:
    """Place an order for one SKU as the given customer (the demo customer by default)."""

    async def action(client: ShopClient) -> Message:
        by_sku = {p.sku: p.product_id for p in await client.all_products()}
        if sku not in by_sku:
            raise typer.BadParameter(f"no product with sku {sku}")
        return await client.place_order([(by_sku[sku], quantity)], str(uuid.uuid4()))

    show(run(etcd, email, password, action))


@app.command()
def orders(
    etcd: EtcdOption = "127.0.0.1:12379",
    email: EmailOption = CUSTOMER[0],
    password: PasswordOption = CUSTOMER[1],
) -> None:
    """The caller's latest orders."""
    for order in run(etcd, email, password, lambda c: c.list_orders()):
        show(order)


@app.command()
def balance(
    etcd: EtcdOption = "127.0.0.1:12379",
    email: EmailOption = CUSTOMER[0],
    password: PasswordOption = CUSTOMER[1],
) -> None:
    """The caller's wallet."""
    show(run(etcd, email, password, lambda c: c.balance()))


keys_app = typer.Typer(add_completion=False, help="Token signing keys (admin only).")
app.add_typer(keys_app, name="keys")


def _when(moment: Timestamp, present: bool) -> str:
    return moment.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds") if present else "-"


def show_keys(keys: list[user_pb2.SigningKey]) -> None:
    rows = [("KID", "CREATED", "RETIRED", "REMOVED AT", "")]
    for key in keys:
        rows.append(
            (
                key.kid,
                _when(key.created_at, key.HasField("created_at")),
                _when(key.retired_at, key.HasField("retired_at")),
                _when(key.removes_at, key.HasField("removes_at")),
                "signing" if key.signing else "",
            )
        )
    for line in render_table(rows):
        typer.echo(line)


@keys_app.command("rotate")
def keys_rotate(
    etcd: EtcdOption = "127.0.0.1:12379",
    email: EmailOption = ADMIN[0],
    password: PasswordOption = ADMIN[1],
) -> None:
    """Add a signing key: it signs every new token; the old one verifies until it is removed."""
    show_keys(run(etcd, email, password, lambda c: c.rotate_signing_key()))


@keys_app.command("list")
def keys_list(
    etcd: EtcdOption = "127.0.0.1:12379",
    email: EmailOption = ADMIN[0],
    password: PasswordOption = ADMIN[1],
) -> None:
    """The published signing keys, newest first, and when each retired one is removed."""
    show_keys(run(etcd, email, password, lambda c: c.list_signing_keys()))


if __name__ == "__main__":
    app()

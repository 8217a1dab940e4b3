"""shopctl: talk to a running shop from the terminal (services found through etcd).

python -m ops.shopctl products
python -m ops.shopctl place-order --sku DEMO-TSHIRT --quantity 1
python -m ops.shopctl orders
python -m ops.shopctl balance
python -m ops.shopctl keys rotate      (admin: a new token signing key)
python -m ops.shopctl keys list
python -m ops.shopctl config get [SCOPE]      (the runtime knobs in etcd; admin for set)
python -m ops.shopctl config set SCOPE '{"...": ...}'
python -m ops.shopctl config history SCOPE
python -m ops.shopctl config rollback SCOPE [--to ENTRY]
python -m ops.shopctl config status
python -m ops.shopctl logs TRACE_ID           (every log line of one trace, all services)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import aetcd
import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from ops.config_admin import SCOPES, wait_applied
from ops.seed import ADMIN, CUSTOMER
from ops.shop_client import ShopClient, connect
from ops.table import render_table
from ops.tracing import trace_tool
from shared.config import store
from shared.observability import trace_context
from shared.observability.tracing import ALWAYS_SAMPLE, tracer
from shared.registry.discovery import Instance, parse_instance
from shared.registry.etcd import PREFIX, etcd_client
from shared.settings import DEV_TLS_DIR, REPO_ROOT
from shared.tls import ClientTLS
from shop.user.v1 import user_pb2

T = TypeVar("T")
app = typer.Typer(add_completion=False, help=__doc__)

EtcdOption = Annotated[str, typer.Option(envvar="SHOP_ETCD_ENDPOINT", help="etcd host:port")]
EmailOption = Annotated[str, typer.Option(help="log in as")]
PasswordOption = Annotated[str, typer.Option(help="password")]
# Set once for every command by the callback below: where the operator's certificate is.
tls_dir = DEV_TLS_DIR
# `make run`'s Zipkin and log files, the defaults as its etcd is (devstack/config.py's dev
# profile; tests/unit/test_ops_defaults.py holds them to it).
DEV_ZIPKIN = "http://127.0.0.1:19411"
DEV_LOGS_DIR = REPO_ROOT / ".stack" / "dev" / "logs"


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
    trace_endpoint: Annotated[
        str,
        typer.Option(
            envvar="SHOP_TRACE_ENDPOINT", help="Zipkin's span URL; shopctl's calls are traced"
        ),
    ] = f"{DEV_ZIPKIN}/api/v2/spans",
) -> None:
    global tls_dir
    tls_dir = tls
    trace_tool("shopctl", trace_endpoint)


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
        # A person's order is always traced: the command prints where to look at it.
        with tracer().start_as_current_span(
            "shopctl place-order", attributes={ALWAYS_SAMPLE: True}
        ) as span:
            order = await client.place_order([(by_sku[sku], quantity)], str(uuid.uuid4()))
        if (trace_id := trace_context.current_trace_id(span)) is not None:
            typer.echo(f"trace {trace_id}: {DEV_ZIPKIN}/zipkin/traces/{trace_id}", err=True)
        return order

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


config_app = typer.Typer(
    add_completion=False,
    help="The config center: runtime knobs in etcd (changes: admin, operator certificate).",
)
app.add_typer(config_app, name="config")
ScopeArgument = Annotated[str, typer.Argument(help=f"one of: {', '.join(SCOPES)}")]


def with_etcd(etcd: str, action: Callable[[aetcd.Client], Awaitable[T]]) -> T:
    async def go() -> T:
        # As the operator, whom etcd lets read everything and write config documents.
        client = etcd_client(etcd, tls=ClientTLS.operator(tls_dir))
        try:
            return await action(client)
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except (store.InvalidDocument, store.ConfigConflict, TimeoutError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    except aetcd.exceptions.ClientError as error:  # refused (no right) or unreachable
        typer.echo(f"error: etcd: {error}", err=True)
        raise typer.Exit(1) from None
    except OSError as error:  # the operator's certificate is missing
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def as_admin(etcd: str, email: str, password: str) -> str:
    """Changes need an admin's login, over the operator's certificate; returns the email."""

    async def check(client: ShopClient) -> bool:
        reply = await client.login(email, password)
        return bool(reply.user.role == user_pb2.ROLE_ADMIN)

    if not run(etcd, email, password, check):
        typer.echo(f"error: {email} is not an admin; config changes need one", err=True)
        raise typer.Exit(1)
    return email


def parse_document(text: str) -> dict[str, object]:
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        typer.echo(f"error: not JSON: {error}", err=True)
        raise typer.Exit(1) from None
    if not isinstance(document, dict):
        typer.echo("error: a config document is a JSON object", err=True)
        raise typer.Exit(1)
    return document


@config_app.command("get")
def config_get(
    scope: Annotated[str | None, typer.Argument()] = None, etcd: EtcdOption = "127.0.0.1:12379"
) -> None:
    """The document of SCOPE (or of every scope) and its revision (0: none, defaults)."""

    async def read_all(client: aetcd.Client) -> list[store.StoredDocument]:
        return [await store.read(client, SCOPES, s) for s in ([scope] if scope else SCOPES)]

    for stored in with_etcd(etcd, read_all):
        typer.echo(f"# {stored.scope} @ revision {stored.revision}")
        typer.echo(json.dumps(stored.document, indent=2, sort_keys=True))


@config_app.command("set")
def config_set(
    scope: ScopeArgument,
    document: Annotated[str, typer.Argument(help="the JSON document, or @file")],
    expect_revision: Annotated[
        int | None, typer.Option(help="fail unless the document is still at this revision")
    ] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for every instance")] = 5.0,
    etcd: EtcdOption = "127.0.0.1:12379",
    email: EmailOption = ADMIN[0],
    password: PasswordOption = ADMIN[1],
) -> None:
    """Validate, then replace SCOPE's document with a compare-and-swap on its revision."""
    author = as_admin(etcd, email, password)
    parsed = parse_document(document)

    async def go(client: aetcd.Client) -> tuple[int, int, float]:
        expected = expect_revision
        if expected is None:
            expected = (await store.read(client, SCOPES, scope)).revision
        revision = await store.write(
            client, SCOPES, scope, parsed, expected_revision=expected, author=author
        )
        applied, took = await wait_applied(client, scope, revision, wait) if wait else ([], 0.0)
        return revision, len(applied), took

    revision, instances, took = with_etcd(etcd, go)
    typer.echo(
        f"set {scope} at revision {revision}; applied by {instances} instances "
        f"in {took * 1000:.0f} ms"
    )


@config_app.command("history")
def config_history(scope: ScopeArgument, etcd: EtcdOption = "127.0.0.1:12379") -> None:
    """Every document SCOPE had, oldest first."""
    rows = [("entry", "at", "author", "replaced", "document")]
    for entry in with_etcd(etcd, lambda client: store.history(client, SCOPES, scope)):
        at = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        document = json.dumps(entry.document, sort_keys=True)
        rows.append(
            (
                entry.entry_id,
                at,
                entry.author,
                str(entry.replaced_revision),
                document if len(document) < 60 else document[:57] + "...",
            )
        )
    for line in render_table(rows):
        typer.echo(line)


@config_app.command("rollback")
def config_rollback(
    scope: ScopeArgument,
    to: Annotated[
        str | None, typer.Option(help="a history entry (default: the one before)")
    ] = None,
    etcd: EtcdOption = "127.0.0.1:12379",
    email: EmailOption = ADMIN[0],
    password: PasswordOption = ADMIN[1],
) -> None:
    """Put an earlier document of SCOPE back (a new write, with the same compare-and-swap)."""
    author = as_admin(etcd, email, password)

    async def go(client: aetcd.Client) -> tuple[store.HistoryEntry, int]:
        current = await store.read(client, SCOPES, scope)
        return await store.rollback(
            client, SCOPES, scope, to=to, expected_revision=current.revision, author=author
        )

    entry, revision = with_etcd(etcd, go)
    typer.echo(f"rolled {scope} back to entry {entry.entry_id}; now at revision {revision}")


@app.command()
def instances(etcd: EtcdOption = "127.0.0.1:12379") -> None:
    """Every instance registered in etcd: service, instance id, address, version."""

    async def read(client: aetcd.Client) -> list[Instance]:
        found = []
        for kv in await client.get_prefix(PREFIX.encode()):
            instance = parse_instance(kv.key, kv.value, kv.lease)
            if instance is not None:
                found.append(instance)
        return sorted(found, key=lambda i: (i.service, i.instance_id))

    rows = [("service", "instance", "address", "version")]
    rows += [(i.service, i.instance_id, i.address, i.version) for i in with_etcd(etcd, read)]
    for line in render_table(rows):
        typer.echo(line)


@config_app.command("status")
def config_status(etcd: EtcdOption = "127.0.0.1:12379") -> None:
    """Every live instance and the document revisions it applied."""
    rows = [("service", "instance", "global", "own", "refused")]
    for s in with_etcd(etcd, store.statuses):
        refused = ", ".join(f"{k}@{v}" for k, v in s.refused.items()) or "-"
        rows.append(
            (
                s.service,
                s.instance_id,
                str(s.revisions.get("global", 0)),
                str(s.revisions.get(s.service, 0)),
                refused,
            )
        )
    for line in render_table(rows):
        typer.echo(line)


def lines_of_trace(log_dir: Path, trace_id: str) -> list[dict[str, str]]:
    """The JSON log lines (shared/logs.py) carrying ``trace_id``, oldest first."""
    found = []
    for path in sorted(log_dir.glob("*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for text in lines:
                if trace_id not in text:  # cheap: most lines are of other traces
                    continue
                try:
                    line = json.loads(text)
                except ValueError:
                    continue  # a line being written right now
                if line.get("trace_id") == trace_id:
                    found.append(line)
    return sorted(found, key=lambda line: str(line.get("ts", "")))


@app.command()
def logs(
    trace_id: Annotated[str, typer.Argument(help="a trace id (32 hex digits)")],
    log_dir: Annotated[
        Path, typer.Option(help="where the services write their JSON lines")
    ] = DEV_LOGS_DIR,
) -> None:
    """Every log line of one trace, across all services and instances, in time order."""
    lines = lines_of_trace(log_dir, trace_id.lower())
    for line in lines:
        typer.echo(
            f"{line['ts']} {line['service']:<9} {line['instance']:<18} {line['level']:<7}"
            f" {line['message']}"
        )
    if not lines:
        typer.echo(f"no log line of trace {trace_id} in {log_dir}/*.jsonl", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

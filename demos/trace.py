"""`make demo-trace`: one order, followed through all five services, as Zipkin shows it.

A fresh buyer is registered and funded first (outside the trace). Then, in one trace
started here and sampled whatever the services' ratio (they follow a sampled parent):
the buyer logs in (user) and places an order (order, which prices it with product);
the saga then runs through Kafka (inventory, payment, back to order) under the same
trace, carried by the outbox and the records' ``traceparent`` header. When the order
has ended and its spans have reached Zipkin, the demo prints the trace's URL, a text
waterfall, and one line:

    demo-trace: trace <id> · S spans · services user,product,order,inventory,payment · saga hops H

(a saga hop is one event handled by a consumer).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import aetcd
import grpc
from opentelemetry import trace

from demos.session import DemoResult, on_make_run
from devstack.stack import Stack
from ops.seed import ADMIN, CATALOG
from ops.shop_client import ShopClient
from ops.tracing import trace_tool
from pki.identities import SERVICES
from shared.observability.tracing import ALWAYS_SAMPLE, tracer
from shared.registry.discovery import ServiceDirectory
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS
from shop.order.v1 import order_pb2

NAME = "demo-trace"
SKU = "DEMO-MUG"
MIN_STOCK = 5
FUNDS_MINOR = 10_000
TERMINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}
TRACE_WAIT_SECONDS = 30.0
# The order a request meets them in: the line lists them so.
TRACE_ORDER = ("user", "product", "order", "inventory", "payment")


@dataclass(frozen=True)
class ZipkinSpan:
    service: str
    name: str
    span_id: str
    parent_id: str | None
    kind: str
    start_us: int
    duration_us: int

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> ZipkinSpan:
        return cls(
            service=str(raw.get("localEndpoint", {}).get("serviceName", "?")),
            name=str(raw.get("name", "?")),
            span_id=str(raw["id"]),
            parent_id=raw.get("parentId"),
            kind=str(raw.get("kind", "")),
            start_us=int(raw.get("timestamp", 0)),
            duration_us=int(raw.get("duration", 0)),
        )


def fetch_trace(api_base: str, trace_id: str) -> list[ZipkinSpan]:
    """The trace's spans as Zipkin has them now ([] while it has none)."""
    try:
        with urllib.request.urlopen(f"{api_base}/api/v2/trace/{trace_id}", timeout=5) as reply:
            return [ZipkinSpan.parse(raw) for raw in json.load(reply)]
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return []
        raise


def services_of(spans: list[ZipkinSpan]) -> list[str]:
    """The shop's services in the trace, in the order a request meets them."""
    seen = {span.service for span in spans}
    return [service for service in TRACE_ORDER if service in seen]


def saga_hops(spans: list[ZipkinSpan]) -> int:
    return sum(1 for span in spans if span.kind == "CONSUMER")


def waterfall(spans: list[ZipkinSpan]) -> list[str]:
    """Service, span (indented under its parent), start offset and duration, in ms."""
    by_id = {span.span_id: span for span in spans}
    children: dict[str | None, list[ZipkinSpan]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in by_id else None
        children.setdefault(parent, []).append(span)
    start = min((span.start_us for span in spans), default=0)
    lines = [f"{'start ms':>9} {'took ms':>8}  {'service':<10} span"]

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_us):
            lines.append(
                f"{(span.start_us - start) / 1000:9.1f} {span.duration_us / 1000:8.1f}"
                f"  {span.service:<10} {'  ' * depth}{span.name}"
            )
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return lines


async def order_status(buyer: ShopClient, order_id: str) -> str:
    order = await buyer.get_order(order_id)
    return str(order_pb2.OrderStatus.Name(order.status)).removeprefix("ORDER_STATUS_")


async def prepare_buyer(clients: ServiceClients) -> tuple[ShopClient, str, str]:
    """A funded buyer, and the product with enough stock; nothing of it traced."""
    admin = ShopClient(clients)
    await admin.login(*ADMIN)
    products = {p.sku: p.product_id for p in await admin.all_products()}
    if SKU not in products:
        raise LookupError(f"{SKU} is not in the catalog; start the system with `make run`")
    if (await admin.get_stock(SKU)).available < MIN_STOCK:
        await admin.set_stock(SKU, dict((s, n) for s, _, _, n in CATALOG)[SKU])
    email, password = f"trace-{uuid.uuid4().hex[:10]}@shop.local", "trace-password-1"
    buyer = ShopClient(clients)
    await buyer.register(email, password)
    await buyer.login(email, password)
    await buyer.top_up(FUNDS_MINOR, idempotency_key=f"demo-trace-{email}")
    return ShopClient(clients), email, products[SKU]


async def wait_for_trace(api_base: str, trace_id: str, timeout: float) -> list[ZipkinSpan]:
    """Until Zipkin has spans of every service and their count stopped growing."""
    deadline = time.monotonic() + timeout
    spans: list[ZipkinSpan] = []
    while time.monotonic() < deadline:
        latest = await asyncio.to_thread(fetch_trace, api_base, trace_id)
        if len(services_of(latest)) == len(SERVICES) and len(latest) == len(spans):
            return latest
        spans = latest
        await asyncio.sleep(1.5)
    return spans


async def run_demo(
    directory: ServiceDirectory, tls: ClientTLS, zipkin_api: str, zipkin_ui: str
) -> DemoResult:
    clients = ServiceClients(directory, tls)
    try:
        buyer, email, product_id = await prepare_buyer(clients)
        with tracer().start_as_current_span(
            "demo-trace: log in and place an order", attributes={ALWAYS_SAMPLE: True}
        ) as root:
            trace_id = format(root.get_span_context().trace_id, "032x")
            await buyer.login(email, "trace-password-1")
            order = await buyer.place_order([(product_id, 1)], uuid.uuid4().hex)
        # Polled outside the trace: the order's own spans are what the demo shows.
        with trace.use_span(trace.INVALID_SPAN):
            deadline = time.monotonic() + TRACE_WAIT_SECONDS
            status = await order_status(buyer, order.order_id)
            while status not in TERMINAL and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                status = await order_status(buyer, order.order_id)
    finally:
        await clients.close()
    # This process's own spans go now; the services export theirs within a second.
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    spans = await wait_for_trace(zipkin_api, trace_id, TRACE_WAIT_SECONDS)
    print(f"order {order.order_id}: {status}")
    print(f"trace: {zipkin_ui}traces/{trace_id}")
    for line in waterfall(spans):
        print(line)
    services = services_of(spans)
    summary = (
        f"demo-trace: trace {trace_id} · {len(spans)} spans · services {','.join(services)}"
        f" · saga hops {saga_hops(spans)}"
    )
    return DemoResult(ok=len(services) == len(SERVICES) and status in TERMINAL, summary=summary)


async def main_async() -> int:
    stack = Stack("dev")
    if not trace_tool(NAME, stack.zipkin.spans_url):  # its spans go out as it exits
        print(
            f"{NAME}: Zipkin is not up at {stack.zipkin.ui_url}; start the system with `make run`"
        )
        return 2

    async def demo(_: aetcd.Client, directory: ServiceDirectory, stack: Stack) -> DemoResult:
        api = f"http://{stack.zipkin.endpoint}"
        return await run_demo(
            directory, ClientTLS.operator(stack.tls_dir), api, stack.zipkin.ui_url
        )

    try:
        return await on_make_run(NAME, SERVICES, demo)
    except (grpc.aio.AioRpcError, LookupError) as error:
        detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        print(f"{NAME}: FAILED: {detail}")
        return 1


def main() -> None:
    sys.exit(asyncio.run(main_async()))


if __name__ == "__main__":
    main()

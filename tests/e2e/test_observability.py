"""Traces, metrics and logs of the whole system on the test stack, looked at the way a
person would: `make demo-trace`'s core against Zipkin, Prometheus' targets and queries,
an instance's /metrics, `shopctl logs`, and both UIs in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aetcd
import grpc
import pytest
import pytest_asyncio

from demos import trace
from devstack.install import ensure_chromium
from devstack.stack import Stack
from ops.config_admin import SCOPES, wait_applied
from ops.seed import CUSTOMER
from ops.shop_client import ShopClient
from ops.shopctl import lines_of_trace
from shared.config import store
from shared.config.center import config_key
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS, channel_options
from shop.product.v1 import product_pb2, product_pb2_grpc
from tests.e2e.conftest import RunningSystem, running_system
from tests.support.tokens import TestKeys, bearer

pytestmark = pytest.mark.e2e

REPORTS = Path(__file__).resolve().parents[2] / "reports"
SUMMARY = re.compile(
    r"demo-trace: trace ([0-9a-f]{32}) · (\d+) spans · services"
    r" user,product,order,inventory,payment · saga hops (\d+)"
)
PLACE_ORDER_P95 = (
    "histogram_quantile(0.95, sum by (le) (rate(grpc_server_handling_seconds_bucket{"
    'grpc_method="PlaceOrder"}[1m])))'
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningSystem]:
    async with running_system(stack, keys) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def demo(system: RunningSystem) -> tuple[str, str]:
    """One order through the system, traced: (its trace id, the demo's summary line)."""
    stack = system.stack
    result = await trace.run_demo(
        system.directory,
        ClientTLS.operator(stack.tls_dir),
        f"http://{stack.zipkin.endpoint}",
        stack.zipkin.ui_url,
    )
    assert result.ok, result.summary
    match = SUMMARY.fullmatch(result.summary)
    assert match, result.summary
    return match[1], result.summary


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)


def has_value(result: list[dict[str, Any]]) -> bool:
    return any(row["value"][1] not in ("NaN", "+Inf") for row in result)


def read_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


def prometheus_query(stack: Stack, expression: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expression})
    answer = get_json(f"{stack.prometheus.url}api/v1/query?{query}")
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


async def test_one_order_is_one_trace_through_all_five_services(
    system: RunningSystem, demo: tuple[str, str]
) -> None:
    trace_id, summary = demo
    spans = trace.fetch_trace(f"http://{system.stack.zipkin.endpoint}", trace_id)
    # OrderCreated → inventory → InventoryReserved → payment → PaymentSucceeded →
    # inventory → InventoryCommitted → order: four events handled, each a span.
    assert trace.saga_hops(spans) >= 4, summary
    names = {(span.service, span.name) for span in spans}
    assert ("order", "/shop.order.v1.orderservice/placeorder") in names
    assert ("product", "/shop.product.v1.productservice/batchgetproducts") in names
    assert ("payment", "payment handle inventoryreserved") in names
    # Every span but the test's own root hangs off a span of the same trace.
    ids = {span.span_id for span in spans}
    orphans = [s for s in spans if s.parent_id is not None and s.parent_id not in ids]
    assert {s.service for s in orphans} <= {"user", "order"}, orphans  # children of the root


async def test_the_logs_of_the_trace_are_found_across_services(
    system: RunningSystem, demo: tuple[str, str]
) -> None:
    trace_id, _ = demo
    deadline = time.monotonic() + 10
    while True:
        lines = lines_of_trace(system.stack.profile.logs_dir, trace_id)
        services = {line["service"] for line in lines}
        if {"order", "inventory", "payment"} <= services or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert {"order", "inventory", "payment"} <= services, lines
    assert all(line["trace_id"] == trace_id for line in lines)
    assert any("placed" in line["message"] for line in lines)


async def test_prometheus_scrapes_every_instance_found_in_etcd(
    system: RunningSystem, demo: tuple[str, str]
) -> None:
    stack = system.stack
    expected = {child.instance_id for child in system.launcher.processes}
    deadline = time.monotonic() + 40
    while True:
        targets = get_json(f"{stack.prometheus.url}api/v1/targets")["data"]["activeTargets"]
        up = {t["labels"].get("instance_id") for t in targets if t["health"] == "up"}
        if expected <= up or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert expected <= up, targets
    # What the order service counted, as Prometheus stored it.
    placed = prometheus_query(
        stack, 'sum(grpc_server_handled_total{service="order",grpc_method="PlaceOrder"})'
    )
    assert placed and float(placed[0]["value"][1]) >= 1


async def test_an_instance_exposes_red_saga_outbox_lag_and_config_metrics(
    system: RunningSystem, demo: tuple[str, str]
) -> None:
    [order] = system.directory.instances("order")
    assert order.metrics
    text = await asyncio.to_thread(read_text, f"http://{order.metrics}/metrics")
    for line in (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="PlaceOrder"',
        'grpc_server_handling_seconds_bucket{grpc_method="PlaceOrder"',
        'shop_saga_orders_total{state="confirmed"}',
        'shop_saga_duration_seconds_bucket{le="0.5",state="confirmed"}',
        "shop_outbox_backlog ",
        "shop_outbox_oldest_age_seconds ",
        'shop_consumer_lag{group="order"',
        'shop_breaker_state{target="product"} 0.0',
        "shop_config_revision ",
    ):
        assert line.replace('grpc_code="OK",', "") in text or line in text, line
    series = [s for s in text.splitlines() if s and not s.startswith("#")]
    print(f"order instance: {len(series)} metric series")


def chromium(*arguments: str, height: int = 1000) -> str:
    exe = ensure_chromium()
    completed = subprocess.run(
        [
            str(exe),
            "--headless",
            "--no-sandbox",  # root in CI, no user namespaces in the sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            # The trace page renders only the rows in view: tall enough for every span.
            f"--window-size=1400,{height}",
            "--virtual-time-budget=15000",  # the single-page apps render before the capture
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


async def test_a_browser_shows_the_trace_and_the_placeorder_p95_graph(
    system: RunningSystem, demo: tuple[str, str]
) -> None:
    stack = system.stack
    trace_id, _ = demo
    REPORTS.mkdir(exist_ok=True)
    trace_url = f"{stack.zipkin.ui_url}traces/{trace_id}"
    dom = await asyncio.to_thread(chromium, "--dump-dom", trace_url, height=4000)
    for service in ("user", "product", "order", "inventory", "payment"):
        # Each row reads "<service>: <span name>".
        assert re.search(rf">{service}: [^<]+<", dom), f"no span of {service} on the page"
    shot = REPORTS / "trace-ui.png"
    await asyncio.to_thread(chromium, f"--screenshot={shot}", trace_url, height=1400)
    assert shot.stat().st_size > 10_000

    # A P95 over rate() needs PlaceOrder calls between scrapes (every 5 s): a line of them.
    buyer = ShopClient(system.clients)
    await buyer.login(*CUSTOMER)
    for _ in range(15):
        await buyer.place_order([(system.products["DEMO-MUG"], 1)], uuid.uuid4().hex)
        await asyncio.sleep(1)
    deadline = time.monotonic() + 30
    while not has_value(prometheus_query(stack, PLACE_ORDER_P95)):
        assert time.monotonic() < deadline, "Prometheus has no PlaceOrder P95"
        await asyncio.sleep(2)
    graph_url = f"{stack.prometheus.url}classic/graph?" + urllib.parse.urlencode(
        {"g0.expr": PLACE_ORDER_P95, "g0.tab": "0", "g0.range_input": "5m"}
    )
    dom = await asyncio.to_thread(chromium, "--dump-dom", graph_url)
    # Debian's Prometheus 2.42 serves the classic UI: a Rickshaw graph, in SVG.
    series = re.search(r"Total time series: (\d+)", dom)
    assert series and int(series[1]) >= 1, "the query found no series"
    line = re.search(r'<path class="path" d="M([^"]*)"', dom)
    assert line and line[1].count("L") >= 2, "the graph drew no line"
    shot = REPORTS / "prometheus-placeorder-p95.png"
    await asyncio.to_thread(chromium, f"--screenshot={shot}", graph_url)
    assert shot.stat().st_size > 10_000


def product_traces(stack: Stack) -> int:
    """How many traces Zipkin holds whose root is a GetProduct server span of product."""
    query = urllib.parse.urlencode(
        {
            "serviceName": "product",
            "spanName": "/shop.product.v1.productservice/getproduct",
            "lookback": 3_600_000,
            "limit": 10_000,
        }
    )
    traces = get_json(f"http://{stack.zipkin.endpoint}/api/v2/traces?{query}")
    return sum(1 for spans in traces if any("parentId" not in span for span in spans))


async def untraced_get_products(system: RunningSystem, calls: int) -> None:
    """GetProduct over a channel without interceptors: no traceparent, so whether a
    trace starts is the product service's own decision, at its ratio."""
    [product] = system.directory.instances("product")
    operator = ClientTLS.operator(system.stack.tls_dir)
    request = product_pb2.GetProductRequest(product_id=system.products["DEMO-MUG"])
    metadata = bearer(system.keys.token())
    async with grpc.aio.secure_channel(
        product.address, operator.credentials(), options=channel_options("product")
    ) as channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)
        for _ in range(calls):
            await stub.GetProduct(request, metadata=metadata, timeout=5)


async def set_sample_ratio(etcd: aetcd.Client, ratio: float) -> None:
    current = await store.read(etcd, SCOPES, "global")
    document = {**current.document, "tracing": {"sample_ratio": ratio}}
    revision = await store.write(
        etcd, SCOPES, "global", document, expected_revision=current.revision, author="test"
    )
    await wait_applied(etcd, "global", revision, timeout=10)


async def test_the_sample_ratio_is_changed_live_from_the_config_center(
    system: RunningSystem,
) -> None:
    etcd = etcd_client(system.stack.etcd_endpoint, tls=ClientTLS.operator(system.stack.tls_dir))
    try:
        await set_sample_ratio(etcd, 1.0)
        before = await asyncio.to_thread(product_traces, system.stack)
        await untraced_get_products(system, 10)
        deadline = time.monotonic() + 15
        while (traced := await asyncio.to_thread(product_traces, system.stack)) < before + 10:
            assert time.monotonic() < deadline, f"{traced - before} of 10 calls traced at 1.0"
            await asyncio.sleep(0.5)

        await set_sample_ratio(etcd, 0.0)
        await untraced_get_products(system, 10)
        await asyncio.sleep(3)  # three export periods: anything recorded has arrived
        assert await asyncio.to_thread(product_traces, system.stack) == traced
    finally:
        await etcd.delete(config_key("global").encode())  # back to the defaults
        await etcd.close()

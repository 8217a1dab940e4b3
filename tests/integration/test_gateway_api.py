"""The gateway over the real services, PostgreSQL, etcd and Kafka: REST in, gRPC out.

Product, inventory, payment and order run in this process on the test stack (the saga
consuming for real, so an order settles); the gateway runs as it is deployed
(``GatewayServer``: its own database, the JWKS watch, discovery, mutual TLS as
``gateway``, uvicorn on a free port, registered in etcd), and the tests speak HTTP to
it. What this proves is the wire: the catalog's pages, the product page when
inventory is gone, one order for two POSTs with one Idempotency-Key, the saga's
statuses over SSE until confirmed, the problems of a refused token, the body and rate
limits, a trace from the HTTP request into the services, and the stores on PostgreSQL.
The rules themselves are unit tests (tests/unit/gateway/).

The gateway runs as its own party, as deployed: the stack gives it its certificate
(pki/identities.py), its etcd role and its PostgreSQL role owning ``shop_gateway``
(ops/trust/rights.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import httpx
import pytest
import pytest_asyncio
from opentelemetry import trace

from devstack.config import REPO_ROOT
from devstack.launcher import recreate_database, wipe_system_data
from devstack.stack import Stack
from gateway.carts import MAX_LINES, CartLine
from gateway.idempotency import Outcome, PostgresIdempotencyStore
from gateway.server import GatewayServer
from gateway.sessions import PostgresSessionStore, id_hash
from gateway.settings import GatewaySettings
from ops.shop_client import ShopClient, connect
from services.inventory.main import SERVICE as INVENTORY
from services.order.main import SERVICE as ORDER
from services.payment.main import SERVICE as PAYMENT
from services.product.main import SERVICE as PRODUCT
from shared.auth.identity import Role
from shared.auth.scopes import CATALOG_READ, ORDERS_READ
from shared.errors import InvalidArgument
from tests.support.services import RunningService, run_service
from tests.support.tokens import TestKeys
from tests.support.tracing import RecentSpans

pytestmark = pytest.mark.integration

GATEWAY = "gateway"
LIMIT_PER_SECOND, LIMIT_BURST = 5.0, 30
STOCK = 50


@dataclass
class Edge:
    stack: Stack
    keys: TestKeys
    server: GatewayServer
    http: httpx.AsyncClient
    products: dict[str, str]  # sku -> product id
    order: RunningService
    inventory: contextlib.AsyncExitStack  # closed by the test that stops inventory
    gateway_dsn: str

    def customer(self, user_id: uuid.UUID | None = None, **kwargs: object) -> dict[str, str]:
        issuer = self.keys.issuer()
        token = issuer.issue(user_id or uuid.uuid4(), Role.CUSTOMER, **kwargs)[0]  # type: ignore[arg-type]
        return {"Authorization": f"Bearer {token}"}


async def seed(stack: Stack, keys: TestKeys) -> dict[str, str]:
    async with connect(stack.etcd_endpoint, stack.tls_dir) as clients:
        admin = ShopClient(clients, keys.token(Role.ADMIN))
        products = {}
        for n, title in enumerate(("Saga mug", "Outbox hoodie", "Relay cap", "Broker socks")):
            sku = f"GW-{n}-{uuid.uuid4().hex[:6].upper()}"
            products[sku] = (await admin.create_product(sku, title, 1_000 + n)).product_id
            await admin.set_stock(sku, STOCK)
        return products


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def edge(stack: Stack, keys: TestKeys) -> AsyncIterator[Edge]:
    await wipe_system_data(stack)
    gateway_dsn = await recreate_database(stack, "shop_gateway")  # as its role, shop_gateway
    async with contextlib.AsyncExitStack() as running:
        for definition in (PRODUCT, PAYMENT):
            await running.enter_async_context(run_service(definition, stack, keys))
        inventory = contextlib.AsyncExitStack()
        running.push_async_callback(inventory.aclose)
        await inventory.enter_async_context(run_service(INVENTORY, stack, keys))
        order = await running.enter_async_context(
            run_service(ORDER, stack, keys, saga_timeout_seconds=3600)
        )
        products = await seed(stack, keys)
        settings = GatewaySettings(
            pg_dsn=gateway_dsn,
            etcd_endpoint=stack.etcd_endpoint,
            tls_dir=stack.tls_dir,
            http_port=0,
            instance_id=f"gateway-{uuid.uuid4().hex[:6]}",
            registry_ttl_seconds=2,
            shutdown_grace_seconds=1.0,
            rate_limit_per_second=LIMIT_PER_SECOND,
            rate_limit_burst=LIMIT_BURST,
            stock_timeout_seconds=1.0,
        )
        server = GatewayServer(settings)
        running.push_async_callback(server.stop)
        await server.start()
        assert server.gateway is not None
        # A visitor without a token reads the catalog with the gateway's own token; here
        # one of the test keys (the OAuth2 client credentials grant is the user service's).
        anonymous = keys.issuer().issue(
            uuid.uuid4(), Role.CUSTOMER, scopes=[CATALOG_READ], client_id="storefront"
        )[0]

        async def own_token() -> str:
            return anonymous

        server.gateway.anonymous_token = own_token
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            yield Edge(stack, keys, server, http, products, order, inventory, gateway_dsn)


async def test_it_registers_and_is_ready(edge: Edge) -> None:
    reply = await edge.http.get("/healthz/ready")
    assert reply.status_code == 200, reply.text
    async with connect(edge.stack.etcd_endpoint, edge.stack.tls_dir) as clients:
        [instance] = [
            i for i in clients.directory.instances(GATEWAY)
            if i.instance_id == edge.server.settings.instance_id
        ]  # fmt: skip
    assert instance.http == edge.server.http_address
    async with httpx.AsyncClient() as scraper:
        metrics = (await scraper.get(f"http://{instance.metrics}/metrics")).text
    assert (
        'gateway_http_requests_total{method="GET",route="/healthz/ready",status="200"}' in metrics
    )


async def test_the_catalog_in_pages(edge: Edge, recent_spans: RecentSpans) -> None:
    trace_id = uuid.uuid4().hex
    headers = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    skus: list[str] = []
    url = "/api/v1/products?page_size=3"
    while url:
        reply = await edge.http.get(url, headers=headers)
        assert reply.status_code == 200, reply.text
        skus += [p["sku"] for p in reply.json()["products"]]
        link = reply.headers.get("link")
        url = link[1 : link.index(">")] if link else ""
    assert sorted(skus) == sorted(edge.products)
    # The request's trace went on into the product service.
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    names = {span.name for span in recent_spans.of_trace(int(trace_id, 16))}
    assert "GET /api/v1/products" in names
    assert "/shop.product.v1.ProductService/ListProducts" in names, names


async def test_a_product_page_with_its_stock(edge: Edge) -> None:
    sku, product_id = next(iter(edge.products.items()))
    reply = await edge.http.get(f"/api/v1/products/{product_id}")
    assert reply.status_code == 200, reply.text
    assert reply.json()["sku"] == sku
    assert reply.json()["stock"] == {"status": "in_stock", "available": STOCK}


async def test_an_order_posted_twice_with_one_key_is_one_order_confirmed_over_sse(
    edge: Edge,
) -> None:
    user = edge.customer()
    top_up = await edge.http.post(
        "/api/v1/wallet/top-ups",
        json={"amount": {"amount_minor": 100_000, "currency": "USD"}},
        headers={**user, "Idempotency-Key": "fund-1"},
    )
    assert top_up.status_code == 200, top_up.text
    product_id = next(iter(edge.products.values()))
    body = {"items": [{"product_id": product_id, "quantity": 2}]}
    key = f"checkout-{uuid.uuid4().hex}"
    posted = [
        await edge.http.post("/api/v1/orders", json=body, headers={**user, "Idempotency-Key": key})
        for _ in range(2)
    ]
    assert [p.status_code for p in posted] == [201, 201], posted[0].text
    assert posted[0].json() == posted[1].json()
    assert posted[1].headers["idempotent-replayed"] == "true"
    order_id = posted[0].json()["order_id"]
    orders = await asyncpg.connect(edge.order.dsn)
    try:
        count = "SELECT count(*) FROM orders WHERE idempotency_key = $1"
        assert await orders.fetchval(count, key) == 1
    finally:
        await orders.close()
    statuses = []
    async with (
        asyncio.timeout(60),
        edge.http.stream("GET", f"/api/v1/orders/{order_id}/events", headers=user) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                statuses.append(json.loads(line[6:])["status"])
    assert statuses[0] == "pending" and statuses[-1] == "confirmed", statuses
    wallet = await edge.http.get("/api/v1/wallet", headers=user)
    assert wallet.json()["balance"]["amount_minor"] == 100_000 - 2 * 1_000


async def test_refused_tokens_are_problems(edge: Edge) -> None:
    anonymous = await edge.http.get("/api/v1/orders")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="shop"'
    assert anonymous.headers["content-type"] == "application/problem+json"
    expired = await edge.http.get(
        "/api/v1/orders", headers={"Authorization": f"Bearer {edge.keys.expired_token()}"}
    )
    assert expired.status_code == 401 and expired.json()["detail"] == "token expired"
    scoped = await edge.http.get("/api/v1/wallet", headers=edge.customer(scopes=[ORDERS_READ]))
    assert scoped.status_code == 403
    assert scoped.json()["type"] == "https://shop.local/problems/insufficient-scope"


async def test_a_body_over_the_limit_is_a_413(edge: Edge) -> None:
    reply = await edge.http.post(
        "/api/v1/orders",
        content=b"[" + b" " * edge.server.settings.max_body_bytes + b"]",
        headers={**edge.customer(), "Idempotency-Key": "big", "content-type": "application/json"},
    )
    assert reply.status_code == 413
    assert reply.json()["type"] == "https://shop.local/problems/payload-too-large"


async def test_a_client_over_its_rate_limit_gets_429s(edge: Edge) -> None:
    user = edge.customer()
    # At once: the bucket (30, refilled at 5 a second) cannot keep up with 60.
    replies = await asyncio.gather(
        *(edge.http.get("/api/v1/orders", headers=user) for _ in range(2 * LIMIT_BURST))
    )
    codes = [reply.status_code for reply in replies]
    assert codes.count(429) >= 10 and set(codes) == {200, 429}, codes
    refused = next(reply for reply in replies if reply.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["type"] == "https://shop.local/problems/rate-limited"
    assert (await edge.http.get("/api/v1/orders", headers=edge.customer())).status_code == 200


async def test_the_stores_on_postgresql(edge: Edge) -> None:
    pool = await asyncpg.create_pool(edge.gateway_dsn, min_size=1, max_size=4)
    assert pool is not None
    try:
        sessions = PostgresSessionStore(pool, timedelta(seconds=60))
        session = await sessions.create({"state": "abc"})
        hashed = "SELECT count(*) FROM sessions WHERE id_hash = $1"
        assert await pool.fetchval(hashed, id_hash(session.id)) == 1
        assert await pool.fetchval(hashed, session.id.encode()) == 0  # never the id itself
        assert (await sessions.get(session.id)).data == {"state": "abc"}  # type: ignore[union-attr]
        rotated = await sessions.rotate(session.id)
        assert rotated is not None and rotated.id != session.id
        assert await sessions.get(session.id) is None
        assert (await sessions.update(rotated.id, {"tokens": 1})).data == {"tokens": 1}  # type: ignore[union-attr]
        await pool.execute("UPDATE sessions SET expires_at = now() - interval '1 s'")
        assert await sessions.get(rotated.id) is None
        assert await sessions.purge_expired() >= 1

        keys = PostgresIdempotencyStore(pool, timedelta(hours=1))
        user = str(uuid.uuid4())
        outcomes = [
            (await keys.claim(user, "k", "fp-1")).outcome,
            (await keys.claim(user, "k", "fp-1")).outcome,
            (await keys.claim(user, "k", "fp-2")).outcome,
        ]
        assert outcomes == [Outcome.NEW, Outcome.IN_FLIGHT, Outcome.MISMATCH]
        await keys.complete(user, "k", 201, {"order_id": "o-1"}, {"Location": "/o-1"})
        replay = await keys.claim(user, "k", "fp-1")
        assert (replay.outcome, replay.status, replay.body) == (
            Outcome.REPLAY,
            201,
            {"order_id": "o-1"},
        )
        assert replay.headers == {"Location": "/o-1"}
        claims = await asyncio.gather(*(keys.claim(user, "race", "fp") for _ in range(8)))
        assert sorted(c.outcome.value for c in claims).count("new") == 1

        carts = edge.server.gateway.carts  # type: ignore[union-attr]
        owner = uuid.uuid4()
        product_id = str(uuid.uuid4())
        await carts.replace(owner, [CartLine(f"S-{n}", product_id, 1) for n in range(MAX_LINES)])
        with pytest.raises(InvalidArgument):
            await carts.put(owner, CartLine("ONE-MORE", product_id, 1))
        await carts.put(owner, CartLine("S-0", product_id, 7))  # an existing line: fine
        assert (await carts.lines(owner))[0] == CartLine("S-0", product_id, 7)
        assert await carts.remove(owner, "S-0") and not await carts.remove(owner, "S-0")
    finally:
        await pool.close()


def block_under_marker(page: str) -> str:
    """The bash block under the page's "run line for line" marker."""
    text = (REPO_ROOT / "docs" / page).read_text()
    after = text[text.index("run line for line by tests/integration/test_gateway_api.py") :]
    body = after[after.index("```bash\n") + len("```bash\n") :]
    return body[: body.index("\n```")]


async def test_the_manuals_curl_lines(edge: Edge) -> None:
    block = block_under_marker("gateway.md")
    assert block.startswith("GATEWAY=http://localhost:8080\n")
    user = edge.customer()
    funded = await edge.http.post(
        "/api/v1/wallet/top-ups",
        json={"amount": {"amount_minor": 50_000, "currency": "USD"}},
        headers={**user, "Idempotency-Key": "docs-funds"},
    )
    assert funded.status_code == 200
    script = block.replace("http://localhost:8080", edge.server.url, 1)
    env = {**os.environ, "TOKEN": user["Authorization"].removeprefix("Bearer ")}
    process = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) >= 5, out.decode()
    assert lines[2].startswith('{"status":"in_stock"'), lines
    assert lines[3] == "https://shop.local/problems/unauthenticated"
    statuses = [json.loads(line[6:])["status"] for line in lines if line.startswith("data: ")]
    assert statuses[0] == "pending" and statuses[-1] == "confirmed", out.decode()


async def test_a_product_page_without_inventory_still_answers(edge: Edge) -> None:
    """Last: it stops the inventory instance."""
    await edge.inventory.aclose()
    product_id = next(iter(edge.products.values()))
    started = time.monotonic()
    for _ in range(3):  # gone from etcd, or still listed and refusing: both are "unknown"
        reply = await edge.http.get(f"/api/v1/products/{product_id}")
        assert reply.status_code == 200, reply.text
        assert reply.json()["stock"] == {"status": "unknown", "available": None}
    assert time.monotonic() - started < 5
    stock = await edge.http.get(f"/api/v1/stock/{next(iter(edge.products))}")
    assert stock.status_code == 503
    assert stock.json()["type"].startswith("https://shop.local/problems/")

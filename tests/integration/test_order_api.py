"""OrderService over real gRPC, PostgreSQL and etcd, pricing through a real product service.

Both services run in this process and register in the test etcd; the order service
finds the product service only through discovery. What this proves is the wire, the
tables and the constraints; the use cases' rules (idempotent retries, who reads an
order, paging) are unit tests: tests/unit/order/test_use_cases.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio

from devstack.stack import Stack
from services.order.domain import OrderStep, progress
from services.order.main import SERVICE as ORDER
from services.order.persistence import unit_of_work_factory
from services.order.subscriptions import SUBSCRIPTIONS
from services.product.main import SERVICE as PRODUCT
from shared.auth.identity import Role
from shared.messaging.envelope import Event, unwrap, wrap
from shared.messaging.topics import ORDERS
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import etcd_client, instance_key
from shared.tls import ClientTLS
from shop.common.v1 import money_pb2
from shop.events.v1 import inventory_events_pb2, order_events_pb2
from shop.order.v1 import order_pb2 as pb
from shop.order.v1 import order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys, bearer

pytestmark = pytest.mark.integration

TABLES = ("orders", "order_items", "outbox")
# No saga timeout and no event consumer while these tests run: either would settle
# their orders (and write outbox rows) behind their backs, e.g. when an inventory
# service elsewhere on the shared test Kafka rejects their OrderCreated events.
# tests/integration/test_order_saga.py covers both.
NO_TIMEOUT = {"saga_timeout_seconds": 3600, "consume_events": False}


C = grpc.StatusCode


def money(amount: int, currency: str = "USD") -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency=currency)


def new_key() -> str:
    return f"key-{uuid.uuid4().hex}"


async def create_product(
    products: Any,
    keys: TestKeys,
    *,
    price: int = 250,
    currency: str = "USD",
    status: int = product_pb2.PRODUCT_STATUS_ACTIVE,
) -> product_pb2.Product:
    reply = await products.CreateProduct(
        product_pb2.CreateProductRequest(
            sku=f"T-{uuid.uuid4().hex[:10].upper()}",
            title="A thing",
            price=money(price, currency),
            status=status,  # type: ignore[arg-type]
        ),
        metadata=bearer(keys.token(Role.ADMIN)),
    )
    return reply.product


def place_request(items: list[tuple[str, int]], key: str | None = None) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(
        items=[pb.PlaceOrderItem(product_id=p, quantity=q) for p, q in items],
        idempotency_key=key if key is not None else new_key(),
    )


async def counts(service: RunningService) -> dict[str, int]:
    return {table: await service.count(table) for table in TABLES}


async def wait_for_product_instances(stack: Stack, wanted: Callable[[int], bool]) -> int:
    """How many product instances etcd lists, once ``wanted`` holds (or fails after 10 s)."""
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    directory = ServiceDirectory(client)
    await directory.start()
    try:
        await asyncio.wait_for(
            directory.wait_until(lambda: wanted(len(directory.instances("product")))), 10
        )
        return len(directory.instances("product"))
    finally:
        await directory.stop()
        await client.close()


@contextlib.asynccontextmanager
async def registered_dead_product(stack: Stack) -> AsyncIterator[None]:
    """A product instance record in etcd whose address nobody listens on (written with
    product's certificate: only it may write its records)."""
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS(stack.tls_dir, "product"))
    lease = await client.lease(10)  # cleans itself up should the test die here
    try:
        await client.put(
            instance_key("product", "dead").encode(),
            json.dumps({"address": "127.0.0.1:1", "version": "0"}).encode(),
            lease=lease,
        )
        await wait_for_product_instances(stack, lambda n: n == 1)
        yield
    finally:
        await lease.revoke()
        await client.close()


# --- the product service goes away ------------------------------------------------------
# First in this module on purpose: the module's own product instance (fixture below)
# must not be registered yet, or the order service would simply fail over to it.


async def test_product_outage_answers_unavailable_and_writes_nothing(
    stack: Stack, keys: TestKeys
) -> None:
    try:
        await wait_for_product_instances(stack, lambda n: n == 0)
    except TimeoutError:
        pytest.fail(
            "another product instance is registered in the test etcd; this test "
            "needs the only one, so that stopping it is an outage"
        )
    await recreate_database(stack, "product")
    await recreate_database(stack, "order")
    product_cm = run_service(PRODUCT, stack, keys)
    product = await product_cm.__aenter__()
    product_running = True
    try:
        async with run_service(ORDER, stack, keys, **NO_TIMEOUT) as order:
            orders: Any = order_pb2_grpc.OrderServiceStub(order.channel)
            item = await create_product(product_pb2_grpc.ProductServiceStub(product.channel), keys)
            token = bearer(keys.token())
            first = await orders.PlaceOrder(
                place_request([(item.product_id, 2)], "before"), metadata=token
            )

            await product_cm.__aexit__(None, None, None)
            product_running = False
            await wait_for_product_instances(stack, lambda n: n == 0)

            before = await counts(order)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await orders.PlaceOrder(place_request([(item.product_id, 1)]), metadata=token)
            assert caught.value.code() == C.UNAVAILABLE, caught.value.details()
            assert await counts(order) == before

            # A dead instance etcd still lists (its lease not yet expired): the call fails.
            async with registered_dead_product(stack):
                for _ in range(100):  # until the order service's own watch has seen it
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await orders.PlaceOrder(
                            place_request([(item.product_id, 1)]), metadata=token
                        )
                    assert caught.value.code() == C.UNAVAILABLE, caught.value.details()
                    if "no live instance" not in (caught.value.details() or ""):
                        break
                    await asyncio.sleep(0.05)
                assert "product service is unavailable" in (caught.value.details() or "")
            assert await counts(order) == before

            # A retry is answered from the order's own table: no product call needed.
            retry = await orders.PlaceOrder(
                place_request([(item.product_id, 2)], "before"), metadata=token
            )
            assert retry.order == first.order
            assert await counts(order) == before
    finally:
        if product_running:
            await product_cm.__aexit__(None, None, None)


# --- the module's services --------------------------------------------------------------


@dataclass
class World:
    stack: Stack
    keys: TestKeys
    product: RunningService
    order: RunningService
    products: Any  # ProductServiceStub on an aio channel
    orders: Any  # OrderServiceStub on an aio channel
    usd: list[product_pb2.Product]
    eur: product_pb2.Product
    archived: product_pb2.Product
    draft: product_pb2.Product
    # A customer who has one order, and another who does not own it.
    user_id: uuid.UUID = field(default_factory=uuid.uuid4)
    order_id: str = ""
    order_key: str = "the-first-order"
    # Orders of that customer the saga already settled.
    confirmed_id: str = ""
    rejected_id: str = ""

    def token(self, user_id: uuid.UUID | None = None) -> tuple[tuple[str, str], ...]:
        return bearer(self.keys.token(Role.CUSTOMER, user_id=user_id or self.user_id))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(stack: Stack, keys: TestKeys) -> AsyncIterator[World]:
    await recreate_database(stack, "product")
    await recreate_database(stack, "order")
    # Product first, so the order service's directory lists it at start-up.
    async with (
        run_service(PRODUCT, stack, keys) as product,
        run_service(ORDER, stack, keys, **NO_TIMEOUT) as order,
    ):
        products: Any = product_pb2_grpc.ProductServiceStub(product.channel)
        w = World(
            stack=stack,
            keys=keys,
            product=product,
            order=order,
            products=products,
            orders=order_pb2_grpc.OrderServiceStub(order.channel),
            usd=[await create_product(products, keys, price=p) for p in (250, 1999, 5)],
            eur=await create_product(products, keys, currency="EUR"),
            archived=await create_product(
                products, keys, status=product_pb2.PRODUCT_STATUS_ARCHIVED
            ),
            draft=await create_product(products, keys, status=product_pb2.PRODUCT_STATUS_DRAFT),
        )
        reply = await w.orders.PlaceOrder(
            place_request([(w.usd[0].product_id, 1)], w.order_key), metadata=w.token()
        )
        w.order_id = reply.order.order_id
        w.confirmed_id = await settled_order(w, inventory_events_pb2.InventoryCommitted())
        w.rejected_id = await settled_order(w, inventory_events_pb2.InventoryRejected(sku="X"))
        yield w


async def settled_order(
    w: World,
    outcome: inventory_events_pb2.InventoryCommitted | inventory_events_pb2.InventoryRejected,
) -> str:
    """A new order of the world's customer, settled by handing ``outcome`` (its order id
    filled in) to the saga's handler."""
    reply = await w.orders.PlaceOrder(place_request([(w.usd[2].product_id, 1)]), metadata=w.token())
    order_id = reply.order.order_id
    outcome.order_id = order_id
    delivered = Event(envelope=wrap(outcome, order_id), payload=outcome)
    pool = await asyncpg.create_pool(w.order.dsn, min_size=1, max_size=1)
    try:
        async with unit_of_work_factory(pool)() as uow:
            await SUBSCRIPTIONS.handlers[delivered.type](uow, delivered)
    finally:
        await pool.close()
    return order_id


# --- PlaceOrder -------------------------------------------------------------------------


async def test_place_order_prices_from_the_catalog(world: World) -> None:
    a, b = world.usd[0], world.usd[1]
    user = uuid.uuid4()
    before = await counts(world.order)
    reply = await world.orders.PlaceOrder(
        place_request([(a.product_id, 3), (b.product_id, 2)]), metadata=world.token(user)
    )
    order = reply.order
    assert order.status == pb.ORDER_STATUS_PENDING
    assert order.step == pb.ORDER_STEP_PLACED  # the saga has only just started
    assert order.user_id == str(user)
    assert order.status_reason == ""
    assert order.total == money(3 * 250 + 2 * 1999)
    assert {(i.product_id, i.sku, i.quantity, i.unit_price.amount_minor) for i in order.items} == {
        (a.product_id, a.sku, 3, 250),
        (b.product_id, b.sku, 2, 1999),
    }
    assert order.created_at.seconds > 0 and order.created_at == order.updated_at
    # ... and one OrderCreated in the outbox, committed with it: the saga starts.
    assert await counts(world.order) == {
        "orders": before["orders"] + 1,
        "order_items": before["order_items"] + 2,
        "outbox": before["outbox"] + 1,
    }
    got = await world.orders.GetOrder(
        pb.GetOrderRequest(order_id=order.order_id), metadata=world.token(user)
    )
    assert got.order == order
    # The caller's role reaches the use case from the token: an admin reads any order.
    admin = bearer(world.keys.token(Role.ADMIN))
    by_admin = await world.orders.GetOrder(
        pb.GetOrderRequest(order_id=order.order_id), metadata=admin
    )
    assert by_admin.order == order

    conn = await asyncpg.connect(world.order.dsn)
    try:
        rows = await conn.fetch(
            "SELECT topic, event_type, payload FROM outbox WHERE key = $1", order.order_id
        )
    finally:
        await conn.close()
    assert [(r["topic"], r["event_type"]) for r in rows] == [
        (ORDERS, "shop.events.v1.OrderCreated")
    ]
    event = unwrap(rows[0]["payload"])
    assert event.envelope.aggregate_id == order.order_id
    assert event.payload == order_events_pb2.OrderCreated(
        order_id=order.order_id,
        user_id=str(user),
        lines=[order_events_pb2.OrderLine(sku=i.sku, quantity=i.quantity) for i in order.items],
        total=money(3 * 250 + 2 * 1999),
    )


async def test_prices_are_captured_when_the_order_is_placed(world: World) -> None:
    item = await create_product(world.products, world.keys, price=1000)
    placed = await world.orders.PlaceOrder(
        place_request([(item.product_id, 1)]), metadata=world.token()
    )
    await world.products.UpdateProduct(
        product_pb2.UpdateProductRequest(
            product_id=item.product_id,
            price=money(9999),
            status=product_pb2.PRODUCT_STATUS_ARCHIVED,
        ),
        metadata=bearer(world.keys.token(Role.ADMIN)),
    )
    got = await world.orders.GetOrder(
        pb.GetOrderRequest(order_id=placed.order.order_id), metadata=world.token()
    )
    assert got.order.total == money(1000)
    assert got.order.items[0].unit_price == money(1000)


async def test_the_key_belongs_to_one_user(world: World) -> None:
    """The UNIQUE constraint is on (user, key): another user's key is no duplicate."""
    key = new_key()
    items = [(world.usd[0].product_id, 1)]
    mine = await world.orders.PlaceOrder(place_request(items, key), metadata=world.token())
    theirs = await world.orders.PlaceOrder(
        place_request(items, key), metadata=world.token(uuid.uuid4())
    )
    assert mine.order.order_id != theirs.order.order_id


async def test_concurrent_duplicates_make_one_order(world: World) -> None:
    user, key = uuid.uuid4(), new_key()
    items = [(world.usd[0].product_id, 2), (world.usd[2].product_id, 7)]
    before = await counts(world.order)
    replies = await asyncio.gather(
        *(
            world.orders.PlaceOrder(place_request(items, key), metadata=world.token(user))
            for _ in range(10)
        )
    )
    assert len({r.order.order_id for r in replies}) == 1
    assert all(r.order == replies[0].order for r in replies)
    # ... and one OrderCreated in the outbox, committed with it.
    assert await counts(world.order) == {
        "orders": before["orders"] + 1,
        "order_items": before["order_items"] + 2,
        "outbox": before["outbox"] + 1,
    }


async def test_product_deadline_answers_unavailable(world: World) -> None:
    # Its own order instance, whose catalog deadline passes before any answer can arrive.
    async with run_service(
        ORDER, world.stack, world.keys, **NO_TIMEOUT, product_deadline_seconds=1e-6
    ) as hurried:
        orders: Any = order_pb2_grpc.OrderServiceStub(hurried.channel)
        before = await counts(hurried)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await orders.PlaceOrder(
                place_request([(world.usd[0].product_id, 1)]), metadata=world.token()
            )
        assert caught.value.code() == C.UNAVAILABLE, caught.value.details()
        assert "in time" in (caught.value.details() or "")
        assert await counts(hurried) == before


# --- GetOrder ---------------------------------------------------------------------------


async def test_status_and_step_changes_persist(world: World) -> None:
    """The saga's write path: load for update, a step or a transition, save."""
    placed = await world.orders.PlaceOrder(
        place_request([(world.usd[1].product_id, 1)]), metadata=world.token()
    )
    order_id = uuid.UUID(placed.order.order_id)
    pool = await asyncpg.create_pool(world.order.dsn, min_size=1, max_size=1)
    try:
        async with unit_of_work_factory(pool)() as uow:
            order = await uow.orders.get(order_id, for_update=True)
            assert order is not None and order.step is OrderStep.PLACED
            charged = progress(order, OrderStep.CHARGED)
            assert charged is not None
            await uow.orders.save(charged)
        got = await world.orders.GetOrder(
            pb.GetOrderRequest(order_id=str(order_id)), metadata=world.token()
        )
        assert (got.order.status, got.order.step) == (
            pb.ORDER_STATUS_PENDING,
            pb.ORDER_STEP_CHARGED,
        )
        async with unit_of_work_factory(pool)() as uow:
            order = await uow.orders.get(order_id, for_update=True)
            assert order is not None and order.step is OrderStep.CHARGED
            await uow.orders.save(order.cancel("customer changed their mind"))
    finally:
        await pool.close()
    got = await world.orders.GetOrder(
        pb.GetOrderRequest(order_id=str(order_id)), metadata=world.token()
    )
    assert got.order.status == pb.ORDER_STATUS_CANCELLED
    assert got.order.step == pb.ORDER_STEP_CHARGED  # the furthest step reached stays
    assert got.order.status_reason == "customer changed their mind"
    assert got.order.updated_at.ToDatetime() > got.order.created_at.ToDatetime()
    assert got.order.items == placed.order.items


# --- ListOrders -------------------------------------------------------------------------


async def test_list_orders_pages_newest_first(world: World) -> None:
    user = uuid.uuid4()
    placed = []
    for quantity in range(1, 6):
        reply = await world.orders.PlaceOrder(
            place_request([(world.usd[2].product_id, quantity)]), metadata=world.token(user)
        )
        placed.append(reply.order.order_id)
    seen: list[str] = []
    token, pages = "", 0
    while True:
        reply = await world.orders.ListOrders(
            pb.ListOrdersRequest(page_size=2, page_token=token), metadata=world.token(user)
        )
        pages += 1
        assert len(reply.orders) <= 2
        assert all(o.user_id == str(user) and len(o.items) == 1 for o in reply.orders)
        assert all(o.step == pb.ORDER_STEP_PLACED for o in reply.orders)
        seen.extend(o.order_id for o in reply.orders)
        token = reply.next_page_token
        if not token:
            break
    assert seen == placed[::-1]
    assert pages == 3
    everything = await world.orders.ListOrders(pb.ListOrdersRequest(), metadata=world.token(user))
    assert [o.order_id for o in everything.orders] == placed[::-1]
    assert everything.next_page_token == ""


# --- every bad input: exact status, nothing written -------------------------------------

CUSTOMER, OTHER_USER, ADMIN, NONE, EXPIRED, MALFORMED = (
    "customer",
    "other user",
    "admin",
    "none",
    "expired",
    "malformed",
)


@dataclass(frozen=True)
class Bad:
    name: str
    rpc: str
    request: Callable[[World], Any]
    code: grpc.StatusCode
    caller: str = CUSTOMER
    detail: str = ""  # a fragment the error message must contain (e.g. the field)


def _usd(w: World, i: int = 0) -> str:
    return w.usd[i].product_id


UNKNOWN_ID = str(uuid.uuid4())

BAD_INPUTS = [
    # PlaceOrder
    Bad(
        "place: empty",
        "PlaceOrder",
        lambda w: pb.PlaceOrderRequest(),
        C.INVALID_ARGUMENT,
        detail="idempotency_key",
    ),
    Bad(
        "place: no items",
        "PlaceOrder",
        lambda w: place_request([]),
        C.INVALID_ARGUMENT,
        detail="items",
    ),
    Bad(
        "place: 51 items",
        "PlaceOrder",
        lambda w: place_request([(str(uuid.uuid4()), 1) for _ in range(51)]),
        C.INVALID_ARGUMENT,
        detail="items",
    ),
    Bad(
        "place: duplicate product",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1), (_usd(w, 1), 1), (_usd(w), 2)]),
        C.INVALID_ARGUMENT,
        detail="items[2].product_id",
    ),
    Bad(
        "place: empty product id",
        "PlaceOrder",
        lambda w: place_request([("", 1)]),
        C.INVALID_ARGUMENT,
        detail="items[0].product_id",
    ),
    Bad(
        "place: malformed product id",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1), ("not-a-uuid", 1)]),
        C.INVALID_ARGUMENT,
        detail="items[1].product_id",
    ),
    Bad(
        "place: zero quantity",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 0)]),
        C.INVALID_ARGUMENT,
        detail="items[0].quantity",
    ),
    Bad(
        "place: negative quantity",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), -3)]),
        C.INVALID_ARGUMENT,
        detail="items[0].quantity",
    ),
    Bad(
        "place: oversized quantity",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1), (_usd(w, 1), 101)]),
        C.INVALID_ARGUMENT,
        detail="items[1].quantity",
    ),
    Bad(
        "place: empty key",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1)], ""),
        C.INVALID_ARGUMENT,
        detail="idempotency_key",
    ),
    Bad(
        "place: oversized key",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1)], "k" * 65),
        C.INVALID_ARGUMENT,
        detail="idempotency_key",
    ),
    Bad(
        "place: unknown product",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1), (UNKNOWN_ID, 1)]),
        C.NOT_FOUND,
        detail=UNKNOWN_ID,
    ),
    Bad(
        "place: archived product",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1), (w.archived.product_id, 1)]),
        C.FAILED_PRECONDITION,
    ),
    Bad(
        "place: draft product",
        "PlaceOrder",
        lambda w: place_request([(w.draft.product_id, 1)]),
        C.FAILED_PRECONDITION,
    ),
    Bad(
        "place: mixed currencies",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1), (w.eur.product_id, 1)]),
        C.FAILED_PRECONDITION,
        detail="EUR, USD",
    ),
    Bad(
        "place: key reused for other items",
        "PlaceOrder",
        lambda w: place_request([(_usd(w, 1), 1)], w.order_key),
        C.FAILED_PRECONDITION,
    ),
    Bad(
        "place: no token",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1)]),
        C.UNAUTHENTICATED,
        caller=NONE,
    ),
    Bad(
        "place: expired token",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1)]),
        C.UNAUTHENTICATED,
        caller=EXPIRED,
    ),
    Bad(
        "place: malformed authorization",
        "PlaceOrder",
        lambda w: place_request([(_usd(w), 1)]),
        C.UNAUTHENTICATED,
        caller=MALFORMED,
    ),
    # GetOrder
    Bad(
        "get: empty",
        "GetOrder",
        lambda w: pb.GetOrderRequest(),
        C.INVALID_ARGUMENT,
        detail="order_id",
    ),
    Bad(
        "get: malformed id",
        "GetOrder",
        lambda w: pb.GetOrderRequest(order_id="12; DROP"),
        C.INVALID_ARGUMENT,
        detail="order_id",
    ),
    Bad(
        "get: unknown id",
        "GetOrder",
        lambda w: pb.GetOrderRequest(order_id=UNKNOWN_ID),
        C.NOT_FOUND,
    ),
    Bad(
        "get: another user's order",
        "GetOrder",
        lambda w: pb.GetOrderRequest(order_id=w.order_id),
        C.NOT_FOUND,
        caller=OTHER_USER,
    ),
    Bad(
        "get: no token",
        "GetOrder",
        lambda w: pb.GetOrderRequest(order_id=w.order_id),
        C.UNAUTHENTICATED,
        caller=NONE,
    ),
    Bad(
        "get: expired token",
        "GetOrder",
        lambda w: pb.GetOrderRequest(order_id=w.order_id),
        C.UNAUTHENTICATED,
        caller=EXPIRED,
    ),
    # ListOrders
    Bad(
        "list: negative page size",
        "ListOrders",
        lambda w: pb.ListOrdersRequest(page_size=-1),
        C.INVALID_ARGUMENT,
        detail="page_size",
    ),
    Bad(
        "list: oversized page size",
        "ListOrders",
        lambda w: pb.ListOrdersRequest(page_size=101),
        C.INVALID_ARGUMENT,
        detail="page_size",
    ),
    Bad(
        "list: garbage page token",
        "ListOrders",
        lambda w: pb.ListOrdersRequest(page_token="%%%not base64"),
        C.INVALID_ARGUMENT,
        detail="page_token",
    ),
    Bad(
        "list: no token",
        "ListOrders",
        lambda w: pb.ListOrdersRequest(),
        C.UNAUTHENTICATED,
        caller=NONE,
    ),
    Bad(
        "list: expired token",
        "ListOrders",
        lambda w: pb.ListOrdersRequest(),
        C.UNAUTHENTICATED,
        caller=EXPIRED,
    ),
    # CancelOrder
    Bad(
        "cancel: empty",
        "CancelOrder",
        lambda w: pb.CancelOrderRequest(),
        C.INVALID_ARGUMENT,
        detail="order_id",
    ),
    Bad(
        "cancel: malformed id",
        "CancelOrder",
        lambda w: pb.CancelOrderRequest(order_id="' OR 1=1 --"),
        C.INVALID_ARGUMENT,
        detail="order_id",
    ),
    Bad(
        "cancel: oversized id",
        "CancelOrder",
        lambda w: pb.CancelOrderRequest(order_id="f" * 10_000),
        C.INVALID_ARGUMENT,
        detail="order_id",
    ),
    Bad(
        "cancel: unknown id",
        "CancelOrder",
        lambda w: pb.CancelOrderRequest(order_id=UNKNOWN_ID),
        C.NOT_FOUND,
    ),
    Bad(
        "cancel: another user's order",
        "CancelOrder",
        lambda w: pb.CancelOrderRequest(order_id=w.order_id),
        C.NOT_FOUND,
        caller=OTHER_USER,
        detail="does not exist",
    ),
    Bad(
        "cancel: an admin is not the owner",
        "CancelOrder",
        lambda w: pb.CancelOrderRequest(order_id=w.order_id),
        C.NOT_FOUND,
        caller=ADMIN,
    ),
    Bad(
        "cancel: confirmed order",
        "CancelOrder",
        lambda w: pb.CancelOrderRequest(order_id=w.confirmed_id),
        C.FAILED_PRECONDITION,
        detail="confirmed",
    ),
    Bad(
        "cancel: rejected order",
        "CancelOrder",
        lambda w: pb.CancelOrderRequest(order_id=w.rejected_id),
        C.FAILED_PRECONDITION,
        detail="rejected",
    ),
    Bad(
        "cancel: no token",
        "CancelOrder",
        lambda w: pb.CancelOrderRequest(order_id=w.order_id),
        C.UNAUTHENTICATED,
        caller=NONE,
    ),
    Bad(
        "cancel: expired token",
        "CancelOrder",
        lambda w: pb.CancelOrderRequest(order_id=w.order_id),
        C.UNAUTHENTICATED,
        caller=EXPIRED,
    ),
    # WatchOrder (server streaming: the error ends the stream before any message)
    Bad(
        "watch: empty",
        "WatchOrder",
        lambda w: pb.WatchOrderRequest(),
        C.INVALID_ARGUMENT,
        detail="order_id",
    ),
    Bad(
        "watch: malformed id",
        "WatchOrder",
        lambda w: pb.WatchOrderRequest(order_id="-1"),
        C.INVALID_ARGUMENT,
        detail="order_id",
    ),
    Bad(
        "watch: unknown id",
        "WatchOrder",
        lambda w: pb.WatchOrderRequest(order_id=UNKNOWN_ID),
        C.NOT_FOUND,
    ),
    Bad(
        "watch: another user's order",
        "WatchOrder",
        lambda w: pb.WatchOrderRequest(order_id=w.order_id),
        C.NOT_FOUND,
        caller=OTHER_USER,
    ),
    Bad(
        "watch: no token",
        "WatchOrder",
        lambda w: pb.WatchOrderRequest(order_id=w.order_id),
        C.UNAUTHENTICATED,
        caller=NONE,
    ),
    Bad(
        "watch: expired token",
        "WatchOrder",
        lambda w: pb.WatchOrderRequest(order_id=w.order_id),
        C.UNAUTHENTICATED,
        caller=EXPIRED,
    ),
    Bad(
        "watch: malformed authorization",
        "WatchOrder",
        lambda w: pb.WatchOrderRequest(order_id=w.order_id),
        C.UNAUTHENTICATED,
        caller=MALFORMED,
    ),
]


def _metadata(world: World, caller: str) -> tuple[tuple[str, str], ...]:
    if caller == CUSTOMER:
        return world.token()
    if caller == OTHER_USER:
        return world.token(uuid.uuid4())
    if caller == ADMIN:
        return bearer(world.keys.token(Role.ADMIN))
    if caller == EXPIRED:
        return bearer(world.keys.expired_token(Role.CUSTOMER))
    if caller == MALFORMED:
        return (("authorization", "Basic c2hvcDpzaG9w"),)
    return ()


async def state(service: RunningService) -> tuple[dict[str, int], str]:
    """Row counts, and a digest of every order's status: a refused call changes neither."""
    conn = await asyncpg.connect(service.dsn)
    try:
        digest = await conn.fetchval(
            "SELECT md5(coalesce(string_agg(order_id::text || status || status_reason"
            " || updated_at::text, ',' ORDER BY order_id), '')) FROM orders"
        )
    finally:
        await conn.close()
    return await counts(service), digest


async def call(world: World, bad: Bad) -> None:
    rpc = getattr(world.orders, bad.rpc)(bad.request(world), metadata=_metadata(world, bad.caller))
    if isinstance(rpc, grpc.aio.UnaryStreamCall):
        async for _ in rpc:
            pytest.fail("a refused watch sent a message")
    else:
        await rpc


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.name for b in BAD_INPUTS])
async def test_bad_input_is_refused_and_writes_nothing(world: World, bad: Bad) -> None:
    before = await state(world.order)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(world, bad)
    assert caught.value.code() == bad.code, caught.value.details()
    assert bad.detail in (caught.value.details() or "")
    assert await state(world.order) == before


def test_every_rpc_has_bad_inputs() -> None:
    rpcs = set(pb.DESCRIPTOR.services_by_name["OrderService"].methods_by_name)
    assert {b.rpc for b in BAD_INPUTS} == rpcs

"""Order's degraded path over real gRPC, PostgreSQL and etcd: the product service goes away.

The order service prices an order from the last catalog entries it saw, while product
is unreachable, only if /config/order's ``degradation`` is on and every entry is at
most ``max_staleness_seconds`` old; otherwise PlaceOrder fails fast as UNAVAILABLE
and says why. The knobs are set as an operator would: a JSON document in etcd.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio

from devstack.stack import Stack
from services.order.main import SERVICE as ORDER
from services.product.main import SERVICE as PRODUCT
from shared.config.center import ConfigCenter, config_key
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS
from shop.order.v1 import order_pb2 as pb
from shop.order.v1 import order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc
from tests.integration.test_order_api import (
    NO_TIMEOUT,
    counts,
    create_product,
    money,
    place_request,
    registered_dead_product,
    wait_for_product_instances,
)
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys, bearer

pytestmark = pytest.mark.integration

C = grpc.StatusCode
PRICE = 700
ORDER_KEY = config_key("order").encode()

SetKnobs = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Outage:
    """The order service, with product gone after the order service saw ``seen``."""

    order: RunningService
    orders: Any  # OrderServiceStub on an aio channel
    token: tuple[tuple[str, str], ...]
    seen: product_pb2.Product  # priced once while product was up
    unseen: product_pb2.Product  # created, but never looked up by the order service
    live: pb.Order  # the order placed while product was up


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def outage(stack: Stack, keys: TestKeys) -> AsyncIterator[Outage]:
    try:
        await wait_for_product_instances(stack, lambda n: n == 0)
    except TimeoutError:
        pytest.fail(
            "another product instance is registered in the test etcd; this module "
            "needs the only one, so that stopping it is an outage"
        )
    await recreate_database(stack, "product")
    await recreate_database(stack, "order")
    async with AsyncExitStack() as running:
        product_stack = AsyncExitStack()
        running.push_async_callback(product_stack.aclose)  # if the set-up fails midway
        product = await product_stack.enter_async_context(run_service(PRODUCT, stack, keys))
        order = await running.enter_async_context(run_service(ORDER, stack, keys, **NO_TIMEOUT))
        products: Any = product_pb2_grpc.ProductServiceStub(product.channel)
        orders: Any = order_pb2_grpc.OrderServiceStub(order.channel)
        seen = await create_product(products, keys, price=PRICE)
        unseen = await create_product(products, keys, price=900)
        token = bearer(keys.token())
        live = await orders.PlaceOrder(place_request([(seen.product_id, 2)]), metadata=token)

        await product_stack.aclose()  # product goes away (deregistered, port closed)
        await wait_for_product_instances(stack, lambda n: n == 0)
        yield Outage(order, orders, token, seen, unseen, live.order)


@pytest_asyncio.fixture(loop_scope="session")
async def set_knobs(stack: Stack, outage: Outage) -> AsyncIterator[SetKnobs]:
    """Writes /config/order and waits until the order instance applied it; deleted after."""
    center: ConfigCenter = outage.order.host.config
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))

    async def applied(done: Callable[[int], bool]) -> None:
        async with asyncio.timeout(10):
            while not done(center.current.revisions["order"]):
                await asyncio.sleep(0.01)

    async def put(document: dict[str, Any]) -> None:
        reply = await client.put(ORDER_KEY, json.dumps(document).encode())
        await applied(lambda revision: revision >= reply.header.revision)

    try:
        yield put
    finally:
        # etcd is shared by the tests after this one: always back to the defaults.
        try:
            await client.delete(ORDER_KEY)
            await applied(lambda revision: revision == 0)
        finally:
            await client.close()


def degradation(enabled: bool = True, max_staleness_seconds: float = 300) -> dict[str, Any]:
    return {"degradation": {"enabled": enabled, "max_staleness_seconds": max_staleness_seconds}}


async def stored_flag(service: RunningService, order_id: str) -> bool:
    conn = await asyncpg.connect(service.dsn)
    try:
        return bool(
            await conn.fetchval(
                "SELECT priced_from_cache FROM orders WHERE order_id = $1", uuid.UUID(order_id)
            )
        )
    finally:
        await conn.close()


async def refused(outage: Outage, items: list[tuple[str, int]]) -> str:
    """PlaceOrder fails fast as UNAVAILABLE and writes nothing; its message."""
    before = await counts(outage.order)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await outage.orders.PlaceOrder(place_request(items), metadata=outage.token)
    assert caught.value.code() == C.UNAVAILABLE, caught.value.details()
    assert loop.time() - started < 1.0  # no instance to wait for: refused at once
    assert await counts(outage.order) == before
    return caught.value.details() or ""


async def test_a_live_order_is_not_priced_from_the_cache(outage: Outage) -> None:
    assert outage.live.priced_from_cache is False
    assert outage.live.total == money(2 * PRICE)
    assert await stored_flag(outage.order, outage.live.order_id) is False


async def test_switched_on_an_order_is_priced_from_the_last_known_price(
    outage: Outage, set_knobs: SetKnobs
) -> None:
    await set_knobs(degradation(enabled=True, max_staleness_seconds=300))
    before = await counts(outage.order)
    reply = await outage.orders.PlaceOrder(
        place_request([(outage.seen.product_id, 3)]), metadata=outage.token
    )
    order = reply.order
    assert order.status == pb.ORDER_STATUS_PENDING
    assert order.priced_from_cache is True
    assert order.total == money(3 * PRICE)
    assert [(i.product_id, i.sku, i.quantity, i.unit_price) for i in order.items] == [
        (outage.seen.product_id, outage.seen.sku, 3, money(PRICE))
    ]
    # Stored with its OrderCreated, as any order: the saga charges this total.
    assert await counts(outage.order) == {
        "orders": before["orders"] + 1,
        "order_items": before["order_items"] + 1,
        "outbox": before["outbox"] + 1,
    }
    assert await stored_flag(outage.order, order.order_id) is True
    got = await outage.orders.GetOrder(
        pb.GetOrderRequest(order_id=order.order_id), metadata=outage.token
    )
    assert got.order == order


async def test_switched_on_a_product_never_seen_is_refused(
    outage: Outage, set_knobs: SetKnobs
) -> None:
    await set_knobs(degradation(enabled=True))
    message = await refused(outage, [(outage.seen.product_id, 1), (outage.unseen.product_id, 1)])
    assert "no live instance of product" in message
    assert f"no price of product {outage.unseen.product_id} is known" in message
    assert outage.seen.product_id not in message  # that one was fresh enough


async def test_switched_off_the_outage_is_refused_and_says_so(
    outage: Outage, set_knobs: SetKnobs
) -> None:
    await set_knobs(degradation(enabled=False))
    message = await refused(outage, [(outage.seen.product_id, 1)])
    assert "degradation is off" in message


async def test_without_a_document_degradation_is_off(outage: Outage) -> None:
    assert "degradation is off" in await refused(outage, [(outage.seen.product_id, 1)])


async def test_past_the_staleness_bound_the_outage_is_refused_and_says_so(
    outage: Outage, set_knobs: SetKnobs
) -> None:
    await set_knobs(degradation(enabled=True, max_staleness_seconds=0.001))
    message = await refused(outage, [(outage.seen.product_id, 1)])
    assert (
        f"the last known price of product {outage.seen.product_id} is older than 0.001 s" in message
    )


async def test_a_retry_of_a_degraded_order_returns_it(outage: Outage, set_knobs: SetKnobs) -> None:
    await set_knobs(degradation(enabled=True))
    request = place_request([(outage.seen.product_id, 1)])
    first = await outage.orders.PlaceOrder(request, metadata=outage.token)
    assert first.order.priced_from_cache
    await set_knobs(degradation(enabled=False))  # the retry needs no price at all
    again = await outage.orders.PlaceOrder(request, metadata=outage.token)
    assert again.order == first.order


async def test_a_dead_instance_still_listed_is_an_outage_too(
    stack: Stack, outage: Outage, set_knobs: SetKnobs
) -> None:
    """Product listed in etcd but not answering: the calls fail UNAVAILABLE on the wire."""
    directory = outage.order.host._bindings[0].servicer._catalog._clients.directory
    async with registered_dead_product(stack):
        async with asyncio.timeout(10):  # until the order service's own watch has seen it
            while not directory.instances("product"):
                await asyncio.sleep(0.01)
        await set_knobs(degradation(enabled=False))
        message = await refused(outage, [(outage.seen.product_id, 1)])
        assert "the product service is unavailable (UNAVAILABLE)" in message
        assert "degradation is off" in message

        await set_knobs(degradation(enabled=True))
        reply = await outage.orders.PlaceOrder(
            place_request([(outage.seen.product_id, 2)]), metadata=outage.token
        )
        assert reply.order.priced_from_cache is True
        assert reply.order.total == money(2 * PRICE)

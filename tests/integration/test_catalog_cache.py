"""The product service's catalog cache against real PostgreSQL: two instances over one
database, the trigger's notifications, concurrent writers, and a lost listener."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from devstack.stack import Stack
from services.product.main import SERVICE
from services.product.persistence.catalog_cache import LISTENER_NAME
from shared.auth.identity import Role
from shop.common.v1 import money_pb2
from shop.product.v1 import product_pb2 as pb
from shop.product.v1 import product_pb2_grpc
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys, bearer

pytestmark = pytest.mark.integration

LISTENING = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pair(stack: Stack, keys: TestKeys) -> AsyncIterator[tuple[RunningService, ...]]:
    await recreate_database(stack, "product")
    async with (
        run_service(SERVICE, stack, keys) as a,
        run_service(SERVICE, stack, keys) as b,
    ):
        await until(lambda: listeners(a.dsn), lambda n: n >= 2)
        yield a, b


async def listeners(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(LISTENING, LISTENER_NAME))
    finally:
        await conn.close()


async def until(probe: Any, ok: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def stub(service: RunningService) -> Any:
    return product_pb2_grpc.ProductServiceStub(service.channel)


async def create(service: RunningService, keys: TestKeys, price: int) -> pb.Product:
    reply = await stub(service).CreateProduct(
        pb.CreateProductRequest(
            sku=f"C-{uuid.uuid4().hex[:10].upper()}",
            title="cached",
            price=money_pb2.Money(amount_minor=price, currency="USD"),
        ),
        metadata=bearer(keys.token(Role.ADMIN)),
    )
    return reply.product


async def price_via(service: RunningService, keys: TestKeys, product_id: str) -> int:
    reply = await stub(service).GetProduct(
        pb.GetProductRequest(product_id=product_id), metadata=bearer(keys.token(Role.CUSTOMER))
    )
    return int(reply.product.price.amount_minor)


async def set_price_in_sql(dsn: str, product_id: str, price: int, *, notify: bool = True) -> None:
    """A write from outside this instance (another instance, an operator's fix)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            if not notify:
                await conn.execute("ALTER TABLE products DISABLE TRIGGER product_changed")
            await conn.execute(
                "UPDATE products SET price_minor = $2, updated_at = now() WHERE product_id = $1",
                uuid.UUID(product_id),
                price,
            )
            if not notify:
                await conn.execute("ALTER TABLE products ENABLE TRIGGER product_changed")
    finally:
        await conn.close()


async def test_reads_are_cached_and_the_notification_is_what_keeps_them_right(
    pair: tuple[RunningService, ...], keys: TestKeys
) -> None:
    a, _ = pair
    product = await create(a, keys, 100)
    assert await price_via(a, keys, product.product_id) == 100  # now cached
    # Changed with the trigger off: no one is told, so the cache still answers 100.
    await set_price_in_sql(a.dsn, product.product_id, 150, notify=False)
    assert await price_via(a, keys, product.product_id) == 100
    # Changed with it on: the instance hears of it.
    await set_price_in_sql(a.dsn, product.product_id, 175)
    assert await until(lambda: price_via(a, keys, product.product_id), lambda p: p == 175) == 175


async def test_a_write_is_read_back_at_once_where_it_was_made_and_soon_everywhere(
    pair: tuple[RunningService, ...], keys: TestKeys
) -> None:
    a, b = pair
    product = await create(a, keys, 100)
    for service in pair:
        assert await price_via(service, keys, product.product_id) == 100
    await stub(a).UpdateProduct(
        pb.UpdateProductRequest(
            product_id=product.product_id, price=money_pb2.Money(amount_minor=250, currency="USD")
        ),
        metadata=bearer(keys.token(Role.ADMIN)),
    )
    assert await price_via(a, keys, product.product_id) == 250  # read-your-writes, no wait
    assert await until(lambda: price_via(b, keys, product.product_id), lambda p: p == 250) == 250


async def test_under_concurrent_writers_and_readers_no_instance_keeps_a_stale_price(
    pair: tuple[RunningService, ...], keys: TestKeys
) -> None:
    a, b = pair
    products = [await create(a, keys, 1) for _ in range(3)]
    writes_done = asyncio.Event()

    async def writer(product_id: str) -> int:
        price = 1
        for price in range(2, 60):
            await set_price_in_sql(a.dsn, product_id, price)
        return price

    async def reader(service: RunningService, product_id: str) -> None:
        while not writes_done.is_set():
            await price_via(service, keys, product_id)

    readers = [
        asyncio.create_task(reader(s, p.product_id))
        for s in pair
        for p in products
        for _ in range(3)
    ]
    finals = await asyncio.gather(*(writer(p.product_id) for p in products))
    writes_done.set()
    await asyncio.gather(*readers)
    for product, final in zip(products, finals, strict=True):
        for service in (a, b):
            seen = await until(lambda s=service, p=product: price_via(s, keys, p.product_id),
                               lambda price, f=final: price == f, timeout=3)  # fmt: skip
            assert seen == final, (service.host.address, product.product_id)
            # And it stays so (not a lucky read between a stale fill and its eviction).
            await asyncio.sleep(0.2)
            assert await price_via(service, keys, product.product_id) == final


async def test_a_lost_listener_means_reads_from_the_database_until_it_listens_again(
    pair: tuple[RunningService, ...], keys: TestKeys
) -> None:
    a, _ = pair
    product = await create(a, keys, 100)
    assert await price_via(a, keys, product.product_id) == 100
    conn = await asyncpg.connect(a.dsn)
    try:
        # Every listener is cut off; a change made now is heard by no one.
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            LISTENER_NAME,
        )
        await set_price_in_sql(a.dsn, product.product_id, 300, notify=False)
        # The instance noticed the loss and answers from the database, not its old entry.
        assert (
            await until(lambda: price_via(a, keys, product.product_id), lambda p: p == 300) == 300
        )
        assert await until(lambda: listeners(a.dsn), lambda n: n >= 2) >= 2  # both again
    finally:
        await conn.close()
    await set_price_in_sql(a.dsn, product.product_id, 325)
    assert await until(lambda: price_via(a, keys, product.product_id), lambda p: p == 325) == 325

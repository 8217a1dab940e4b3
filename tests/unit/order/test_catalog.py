"""The order's catalog lookup without I/O: what it remembers, and when an outage is answered
from the last known entries (degraded mode) or refused, saying why."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
import pytest

from services.order.adapters.catalog import (
    LISTED_IN_REFUSAL,
    CatalogUnavailable,
    LastKnownCatalog,
    ProductCatalog,
)
from services.order.domain import CatalogEntry
from services.order.knobs import Degradation
from shared.errors import PermissionDenied, Unauthenticated
from shared.money import Money
from shared.registry.discovery import NoInstanceAvailable
from shared.rpc.client import ServiceClients
from shop.common.v1 import money_pb2
from shop.product.v1 import product_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeClients:
    """ServiceClients.call that answers from ``products``, or raises ``failure``."""

    def __init__(self) -> None:
        self.products: dict[str, product_pb2.Product] = {}
        self.failure: Exception | None = None
        self.calls = 0
        self.metadata: list[object] = []  # what each BatchGetProducts was sent with

    async def call(
        self,
        service: str,
        stub_type: Callable[..., Any],
        invoke: Callable[[Any, float], Awaitable[Any]],
        *,
        timeout: float,
        idempotent: bool = False,
    ) -> product_pb2.BatchGetProductsResponse:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        stub = FakeStub(self.products, self.metadata)
        return cast(product_pb2.BatchGetProductsResponse, await invoke(stub, timeout))


class FakeStub:
    def __init__(self, products: dict[str, product_pb2.Product], metadata: list[object]) -> None:
        self._products = products
        self._metadata = metadata

    async def BatchGetProducts(
        self, request: product_pb2.BatchGetProductsRequest, *, metadata: object, **_: Any
    ) -> product_pb2.BatchGetProductsResponse:
        self._metadata.append(metadata)
        return product_pb2.BatchGetProductsResponse(
            products=[self._products[i] for i in request.product_ids if i in self._products]
        )


# The caller's authorization, as grpc_api.py forwards it.
CREDENTIALS = (("authorization", "Bearer t"),)


def rpc_error(code: grpc.StatusCode, details: str = "boom") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details, debug_error_string=""
    )


def product(price: int = 700) -> product_pb2.Product:
    product_id = str(uuid.uuid4())
    return product_pb2.Product(
        product_id=product_id,
        sku=f"S-{product_id[:8].upper()}",
        price=money_pb2.Money(amount_minor=price, currency="USD"),
        status=product_pb2.PRODUCT_STATUS_ACTIVE,
    )


class World:
    def __init__(self) -> None:
        self.clients = FakeClients()
        self.clock = Clock()
        self.degradation = Degradation(enabled=True, max_staleness_seconds=300)
        self.catalog = ProductCatalog(
            cast(ServiceClients, self.clients),
            deadline_seconds=2.0,
            degradation=lambda: self.degradation,
            last_known=LastKnownCatalog(clock=self.clock),
        )

    def add(self, price: int = 700) -> uuid.UUID:
        p = product(price)
        self.clients.products[p.product_id] = p
        return uuid.UUID(p.product_id)


@pytest.fixture
def world() -> World:
    return World()


async def test_a_live_lookup_is_not_from_the_cache_and_is_remembered(world: World) -> None:
    a = world.add(700)
    found = await world.catalog.lookup_with_fallback([a], CREDENTIALS)
    assert not found.from_cache
    assert found.entries[a].price == Money(700, "USD")
    assert len(world.catalog.last_known) == 1
    # On the caller's own token: never with more authority than the user who asked.
    assert world.clients.metadata == [CREDENTIALS]


@pytest.mark.parametrize(
    "failure",
    [
        rpc_error(grpc.StatusCode.UNAVAILABLE),
        rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED),
        NoInstanceAvailable("no live instance of product is registered"),
    ],
    ids=["unavailable", "deadline", "no instance"],
)
async def test_an_outage_is_answered_from_fresh_entries(world: World, failure: Exception) -> None:
    a, b = world.add(700), world.add(25)
    live = await world.catalog.lookup_with_fallback([a, b], CREDENTIALS)
    world.clients.failure = failure
    world.clock.now += 299
    found = await world.catalog.lookup_with_fallback([b, a], CREDENTIALS)
    assert found.from_cache
    assert found.entries == live.entries


async def test_every_lookup_refreshes_what_is_remembered(world: World) -> None:
    a = world.add(700)
    await world.catalog.lookup_with_fallback([a], CREDENTIALS)
    world.clients.products[str(a)].price.amount_minor = 800
    world.clock.now += 200
    await world.catalog.lookup_with_fallback([a], CREDENTIALS)
    world.clients.failure = rpc_error(grpc.StatusCode.UNAVAILABLE)
    world.clock.now += 200  # 400 s after the first sight, 200 s after the last
    found = await world.catalog.lookup_with_fallback([a], CREDENTIALS)
    assert found.from_cache and found.entries[a].price == Money(800, "USD")


async def test_switch_off_refuses_and_says_so(world: World) -> None:
    a = world.add()
    await world.catalog.lookup_with_fallback([a], CREDENTIALS)
    world.clients.failure = rpc_error(grpc.StatusCode.UNAVAILABLE)
    world.degradation = Degradation(enabled=False)
    with pytest.raises(CatalogUnavailable) as caught:
        await world.catalog.lookup_with_fallback([a], CREDENTIALS)
    assert "product service is unavailable" in caught.value.message
    assert "degradation is off" in caught.value.message


async def test_the_default_is_off() -> None:
    clients = FakeClients()
    clients.failure = rpc_error(grpc.StatusCode.UNAVAILABLE)
    catalog = ProductCatalog(cast(ServiceClients, clients), deadline_seconds=2.0)
    with pytest.raises(CatalogUnavailable, match="degradation is off"):
        await catalog.lookup_with_fallback([uuid.uuid4()], CREDENTIALS)


async def test_a_stale_or_unknown_product_refuses_the_whole_lookup(world: World) -> None:
    old, fresh, never = world.add(), world.add(), world.add()
    await world.catalog.lookup_with_fallback([old], CREDENTIALS)
    world.clock.now += 301
    await world.catalog.lookup_with_fallback([fresh], CREDENTIALS)
    world.clients.failure = rpc_error(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(CatalogUnavailable) as caught:
        await world.catalog.lookup_with_fallback([fresh, old, never], CREDENTIALS)
    message = caught.value.message
    assert f"the last known price of product {old} is older than 300 s (301 s)" in message
    assert f"no price of product {never} is known" in message
    assert str(fresh) not in message


async def test_no_instance_stays_no_instance(world: World) -> None:
    world.clients.failure = NoInstanceAvailable("no live instance of product is registered")
    with pytest.raises(NoInstanceAvailable) as caught:
        await world.catalog.lookup_with_fallback([uuid.uuid4()], CREDENTIALS)
    assert caught.value.message.startswith("no live instance of product is registered; ")


async def test_a_long_refusal_names_a_few_and_counts_the_rest(world: World) -> None:
    world.clients.failure = rpc_error(grpc.StatusCode.UNAVAILABLE)
    ids = [uuid.uuid4() for _ in range(LISTED_IN_REFUSAL + 3)]
    with pytest.raises(CatalogUnavailable) as caught:
        await world.catalog.lookup_with_fallback(ids, CREDENTIALS)
    assert caught.value.message.count("no price of product") == LISTED_IN_REFUSAL
    assert caught.value.message.endswith("and 3 more products")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
    ],
)
async def test_a_refused_caller_is_never_degraded(
    world: World, code: grpc.StatusCode, error: type[Exception]
) -> None:
    a = world.add()
    await world.catalog.lookup_with_fallback([a], CREDENTIALS)
    world.clients.failure = rpc_error(code)
    with pytest.raises(error):
        await world.catalog.lookup_with_fallback([a], CREDENTIALS)


async def test_a_product_the_catalog_no_longer_knows_is_forgotten(world: World) -> None:
    a = world.add()
    await world.catalog.lookup_with_fallback([a], CREDENTIALS)
    del world.clients.products[str(a)]
    assert (await world.catalog.lookup_with_fallback([a], CREDENTIALS)).entries == {}
    world.clients.failure = rpc_error(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(CatalogUnavailable, match="no price of product"):
        await world.catalog.lookup_with_fallback([a], CREDENTIALS)


def test_memory_is_bounded_least_recently_seen_first() -> None:
    clock = Clock()
    last_known = LastKnownCatalog(max_entries=3, clock=clock)
    entries = [CatalogEntry(uuid.uuid4(), f"S-{i}", Money(100, "USD"), True) for i in range(4)]
    last_known.remember(entries[:3])
    last_known.remember(entries[:1])  # seen again: now the most recent
    last_known.remember(entries[3:])
    assert len(last_known) == 3
    assert last_known.age(entries[1].product_id) is None  # the least recently seen
    assert all(last_known.age(e.product_id) == 0 for e in (entries[0], entries[2], entries[3]))

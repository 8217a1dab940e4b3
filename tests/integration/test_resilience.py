"""Breakers, retries, deadline budgets and injected faults over real gRPC, mTLS and etcd.

The order service runs for real (its own ServiceClients, breaker and config center);
its product is either the real product service (the fault test) or a scripted one: a
real server with the real interceptor chain, registered in etcd like any instance,
whose handlers answer what a test tells them to, or hang until released (a process
that stopped answering, like SIGSTOP). Knobs are set by writing the JSON documents to
etcd, as `shopctl config set` does, and every key is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aetcd
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.stack import Stack
from services.order.main import SERVICE as ORDER
from services.product.main import SERVICE as PRODUCT
from services.product.settings import ProductSettings
from shared.auth.identity import Role
from shared.config.center import ConfigCenter, config_key
from shared.config.models import BreakerPolicy, GlobalConfig, RetryPolicy
from shared.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.rpc.client import ServiceClients
from shared.rpc.deadlines import deadline_scope
from shared.rpc.interceptors.auth import AccessPolicy
from shared.rpc.server import ServiceBinding, ServiceHost
from shared.rpc.status import CIRCUIT_OPEN, DEADLINE_BUDGET_SPENT, INSTANCE_LEFT, REASON_KEY
from shared.tls import ClientTLS
from shop.common.v1 import money_pb2
from shop.order.v1 import order_pb2 as pb
from shop.order.v1 import order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc
from tests.support.services import (
    RunningService,
    database_name,
    recreate_database,
    run_service,
)
from tests.support.tokens import TestKeys, bearer

pytestmark = pytest.mark.integration

C = grpc.StatusCode
SCOPES = ("global", "order", "product")
NO_TIMEOUT = {"saga_timeout_seconds": 3600, "consume_events": False}
PRICE = 700


# --- knobs ---------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def etcd(stack: Stack) -> AsyncIterator[aetcd.Client]:
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    try:
        yield client
    finally:
        # The test stack's etcd outlives this module: leave no knob behind.
        for scope in SCOPES:
            await client.delete(config_key(scope).encode())
        await client.close()


async def set_knobs(
    client: aetcd.Client, scope: str, document: dict[str, Any], *centers: ConfigCenter
) -> int:
    """Writes /config/<scope>; returns once every center has applied it."""
    key = config_key(scope).encode()
    await client.put(key, json.dumps(document).encode())
    got = await client.get(key)
    assert got is not None
    revision = int(got.mod_revision)
    async with asyncio.timeout(10):
        while not all(c.current.revisions.get(scope, 0) >= revision for c in centers):
            await asyncio.sleep(0.01)
    return revision


def fixed(**retry: Any) -> ConfigCenter:
    """A config of the test's own client (any service name: only the global knobs count),
    whose breaker never opens: at a 30 % fault rate, five failures in a row are common."""
    return ConfigCenter.fixed(
        "order",
        GlobalConfig(retry=RetryPolicy(**retry), breaker=BreakerPolicy(failure_threshold=1000)),
    )


# --- a scripted product ----------------------------------------------------------------------


@dataclass
class ScriptedProduct(product_pb2_grpc.ProductServiceServicer):
    """GetProduct raises ``error`` if set; BatchGetProducts hangs while ``hung`` is set."""

    error: DomainError | None = None
    get_calls: int = 0
    batch_calls: int = 0
    batch_time_remaining: list[float | None] = field(default_factory=list)
    hung: bool = False
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def product(self, product_id: str) -> product_pb2.Product:
        return product_pb2.Product(
            product_id=product_id,
            sku=f"S-{product_id[:8].upper()}",
            title="Scripted",
            price=money_pb2.Money(amount_minor=PRICE, currency="USD"),
            status=product_pb2.PRODUCT_STATUS_ACTIVE,
        )

    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.GetProductResponse:
        self.get_calls += 1
        if self.error is not None:
            raise self.error
        return product_pb2.GetProductResponse(product=self.product(request.product_id))

    async def BatchGetProducts(
        self, request: product_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.BatchGetProductsResponse:
        self.batch_calls += 1
        self.batch_time_remaining.append(context.time_remaining())
        if self.hung:  # as a stopped process: the call is taken, and never answered
            await self.released.wait()
        return product_pb2.BatchGetProductsResponse(
            products=[self.product(i) for i in request.product_ids]
        )

    async def CreateProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(C.UNIMPLEMENTED, "scripted")

    async def UpdateProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(C.UNIMPLEMENTED, "scripted")

    async def ListProducts(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(C.UNIMPLEMENTED, "scripted")

    def hang(self) -> None:
        self.hung = True
        self.released.clear()

    def recover(self) -> None:
        self.hung = False
        self.released.set()


@dataclass
class World:
    stack: Stack
    keys: TestKeys
    product: ScriptedProduct
    product_host: ServiceHost
    order: RunningService
    orders: Any  # OrderServiceStub on an aio channel

    def token(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.keys.token(Role.CUSTOMER))

    async def place_order(self, timeout: float | None = None) -> pb.PlaceOrderResponse:
        request = pb.PlaceOrderRequest(
            items=[pb.PlaceOrderItem(product_id=str(uuid.uuid4()), quantity=1)],
            idempotency_key=uuid.uuid4().hex,
        )
        reply: pb.PlaceOrderResponse = await self.orders.PlaceOrder(
            request, metadata=self.token(), timeout=timeout
        )
        return reply


@pytest_asyncio.fixture(loop_scope="session")
async def scripted(stack: Stack, keys: TestKeys) -> AsyncIterator[tuple[ScriptedProduct, Any]]:
    """A scripted product instance, registered in etcd; with its host."""
    await keys.publish(stack.etcd_endpoint, stack.tls_dir)
    servicer = ScriptedProduct()
    settings = ProductSettings(
        port=0,
        etcd_endpoint=stack.etcd_endpoint,
        # Its readiness (and so its registration) follows the database, as any instance's.
        pg_dsn=stack.pg_dsn(database_name("product")),
        tls_dir=stack.tls_dir,
        registry_ttl_seconds=2,
        shutdown_grace_seconds=0.5,
    )
    host = ServiceHost(
        settings,
        [
            ServiceBinding(
                "shop.product.v1.ProductService",
                product_pb2_grpc.add_ProductServiceServicer_to_server,
                servicer,
            )
        ],
        AccessPolicy({}),
    )
    await host.start()
    try:
        yield servicer, host
    finally:
        servicer.recover()  # hung handlers end, so the server can stop
        await host.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def world(
    stack: Stack, keys: TestKeys, scripted: tuple[ScriptedProduct, ServiceHost]
) -> AsyncIterator[World]:
    await recreate_database(stack, "order")
    product, host = scripted
    async with run_service(ORDER, stack, keys, **NO_TIMEOUT) as order:
        # Until the order's own directory has the scripted product.
        async with asyncio.timeout(10):
            while True:
                try:
                    await order_pb2_grpc.OrderServiceStub(order.channel).PlaceOrder(
                        pb.PlaceOrderRequest(
                            items=[pb.PlaceOrderItem(product_id=str(uuid.uuid4()), quantity=1)],
                            idempotency_key=uuid.uuid4().hex,
                        ),
                        metadata=bearer(keys.token()),
                    )
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)
        yield World(
            stack, keys, product, host, order, order_pb2_grpc.OrderServiceStub(order.channel)
        )


@pytest_asyncio.fixture(loop_scope="session")
async def own_clients(
    stack: Stack,
) -> AsyncIterator[Callable[[ConfigCenter], Awaitable[ServiceClients]]]:
    """The test's own ServiceClients (operator certificate), each with the config given."""
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    directory = ServiceDirectory(client)
    await directory.start()
    made: list[ServiceClients] = []

    async def make(config: ConfigCenter) -> ServiceClients:
        clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir), config=config)
        made.append(clients)
        async with asyncio.timeout(10):
            await directory.wait_until(lambda: bool(directory.instances("product")))
        return clients

    try:
        yield make
    finally:
        for clients in made:
            await clients.close()
        await directory.stop()
        await client.close()


def reason(error: grpc.aio.AioRpcError) -> str | None:
    trailers: dict[str, Any] = dict(cast(Any, error.trailing_metadata()) or ())
    return trailers.get(REASON_KEY)


async def elapsed(call: Awaitable[Any]) -> tuple[float, grpc.aio.AioRpcError | None]:
    started = time.perf_counter()
    try:
        await call
        error = None
    except grpc.aio.AioRpcError as failed:
        error = failed
    return time.perf_counter() - started, error


# --- the circuit breaker ---------------------------------------------------------------------


async def test_order_breaker_opens_on_a_hung_product_fails_fast_then_closes(
    world: World, etcd: aetcd.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared.rpc.breaker")
    center = world.order.host.config
    await set_knobs(
        etcd,
        "global",
        {"breaker": {"failure_threshold": 3, "open_seconds": 1.0, "half_open_trials": 2}},
        center,
    )
    await set_knobs(etcd, "order", {"product_deadline_seconds": 0.3}, center)
    await world.place_order()  # closed: priced by the product service

    world.product.hang()
    slow = []
    for _ in range(3):
        took, error = await elapsed(world.place_order())
        assert error is not None and error.code() == C.UNAVAILABLE, error
        assert "did not answer in time" in (error.details() or "")
        slow.append(took)
    assert min(slow) >= 0.25  # each waited out the catalog's deadline
    assert "circuit for product: closed -> open" in caplog.text

    calls_before = world.product.batch_calls
    fast = []
    for _ in range(10):
        took, error = await elapsed(world.place_order())
        assert error is not None and error.code() == C.UNAVAILABLE
        fast.append(took)
    assert world.product.batch_calls == calls_before  # the product was not called at all
    # Failing fast is not waiting out the deadline; the median, because one call in ten can
    # meet a scheduling pause on a busy two-core machine (0.205 s, once, in a fresh clone).
    assert statistics.median(fast) < 0.2 < min(slow)

    world.product.recover()
    await asyncio.sleep(1.0)  # open_seconds
    await world.place_order()  # a trial: the product answers
    await world.place_order()  # the second trial: closed
    assert "circuit for product: open -> half-open" in caplog.text
    assert "circuit for product: half-open -> closed" in caplog.text
    took, error = await elapsed(world.place_order())
    assert error is None


async def test_an_open_breaker_fails_well_under_5_ms_saying_so(
    scripted: tuple[ScriptedProduct, ServiceHost],
    own_clients: Callable[[ConfigCenter], Awaitable[ServiceClients]],
    keys: TestKeys,
) -> None:
    product, _ = scripted
    config = ConfigCenter.fixed(
        "order",
        GlobalConfig(breaker=BreakerPolicy(failure_threshold=2, open_seconds=30)),
    )
    clients = await own_clients(config)
    request = product_pb2.BatchGetProductsRequest(product_ids=[str(uuid.uuid4())])

    def batch_get() -> Awaitable[product_pb2.BatchGetProductsResponse]:
        return clients.call(
            "product",
            product_pb2_grpc.ProductServiceStub,
            lambda s, t: s.BatchGetProducts(request, timeout=t, metadata=bearer(keys.token())),
            timeout=0.2,
            idempotent=True,
        )

    await batch_get()
    product.hang()
    for _ in range(2):
        _, error = await elapsed(batch_get())
        assert error is not None and error.code() == C.DEADLINE_EXCEEDED
    calls = product.batch_calls
    durations = []
    errors = []
    for _ in range(50):
        took, error = await elapsed(batch_get())
        assert error is not None and error.code() == C.UNAVAILABLE
        durations.append(took)
        errors.append(error)
    assert product.batch_calls == calls
    details = errors[-1].details() or ""
    assert details.startswith("circuit open for product; retry in ") and details.endswith(" s")
    assert reason(errors[-1]) == CIRCUIT_OPEN
    assert statistics.median(durations) < 0.005, durations


async def test_a_call_on_an_instance_that_leaves_fails_unavailable_not_cancelled(
    scripted: tuple[ScriptedProduct, ServiceHost],
    own_clients: Callable[[ConfigCenter], Awaitable[ServiceClients]],
    keys: TestKeys,
) -> None:
    """A frozen instance's lease expires mid-call: the caller's channel to it is closed,
    which cancels the call; the caller sees UNAVAILABLE (INSTANCE_LEFT), not a cancel of
    its own task, and a call that is not idempotent is not sent again."""
    product, host = scripted
    clients = await own_clients(fixed(max_attempts=5))
    request = product_pb2.BatchGetProductsRequest(product_ids=[str(uuid.uuid4())])
    product.hang()
    call = asyncio.ensure_future(
        clients.call(
            "product",
            product_pb2_grpc.ProductServiceStub,
            lambda s: s.BatchGetProducts(request, timeout=10, metadata=bearer(keys.token())),
        )
    )
    async with asyncio.timeout(5):
        while product.batch_calls == 0:
            await asyncio.sleep(0.01)
    assert host.registration is not None
    await host.registration.withdraw()  # as the lease of a frozen instance expires
    took, error = await elapsed(call)
    assert error is not None and error.code() == C.UNAVAILABLE, error
    assert reason(error) == INSTANCE_LEFT
    assert "left during the call" in (error.details() or "")
    assert took < 5.0  # the channel's grace, not the call's 10 s deadline
    assert product.batch_calls == 1


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("product_id", "is not a UUID"), C.INVALID_ARGUMENT),
        (PermissionDenied("not for you"), C.PERMISSION_DENIED),
        (FailedPrecondition("not now"), C.FAILED_PRECONDITION),
    ],
)
async def test_caller_errors_are_tried_once_even_when_idempotent(
    scripted: tuple[ScriptedProduct, ServiceHost],
    own_clients: Callable[[ConfigCenter], Awaitable[ServiceClients]],
    keys: TestKeys,
    error: DomainError,
    code: grpc.StatusCode,
) -> None:
    product, _ = scripted
    clients = await own_clients(fixed(max_attempts=5))
    product.error = error
    invoked = 0

    def get(stub: Any, timeout: float) -> Awaitable[product_pb2.GetProductResponse]:
        nonlocal invoked
        invoked += 1
        reply: Awaitable[product_pb2.GetProductResponse] = stub.GetProduct(
            product_pb2.GetProductRequest(product_id=str(uuid.uuid4())),
            timeout=timeout,
            metadata=bearer(keys.token()),
        )
        return reply

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.call(
            "product", product_pb2_grpc.ProductServiceStub, get, timeout=5.0, idempotent=True
        )
    assert caught.value.code() == code
    assert invoked == 1
    assert product.get_calls == 1


async def test_unavailable_is_tried_up_to_max_attempts(
    scripted: tuple[ScriptedProduct, ServiceHost],
    own_clients: Callable[[ConfigCenter], Awaitable[ServiceClients]],
    keys: TestKeys,
) -> None:
    product, _ = scripted
    clients = await own_clients(fixed(max_attempts=4))
    product.error = Unavailable("its database is down")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.call(
            "product",
            product_pb2_grpc.ProductServiceStub,
            lambda s, t: s.GetProduct(
                product_pb2.GetProductRequest(product_id=str(uuid.uuid4())),
                timeout=t,
                metadata=bearer(keys.token()),
            ),
            timeout=5.0,
        )
    assert caught.value.code() == C.UNAVAILABLE
    assert product.get_calls == 4
    assert clients.counters[("product", "retries")] == 3


# --- deadline budgets ------------------------------------------------------------------------


async def test_the_product_call_carries_the_order_callers_deadline_less_the_margin(
    world: World, etcd: aetcd.Client
) -> None:
    await set_knobs(etcd, "global", {"deadlines": {"margin_ms": 100}}, world.order.host.config)
    world.product.batch_time_remaining.clear()
    await world.place_order(timeout=1.0)
    [remaining] = world.product.batch_time_remaining
    # min(product_deadline_seconds = 2, 1.0 - 0.1), less what the hops took; plus a little,
    # as gRPC rounds the grpc-timeout header up to its coarser units on the way.
    assert remaining is not None and 0.5 < remaining < 0.95


async def test_a_spent_budget_is_not_sent(world: World, etcd: aetcd.Client) -> None:
    await set_knobs(etcd, "global", {"deadlines": {"margin_ms": 500}}, world.order.host.config)
    calls = world.product.batch_calls
    took, error = await elapsed(world.place_order(timeout=0.3))  # 0.3 s < the 0.5 s margin
    assert error is not None
    # Order answered (it did not let our deadline run out) that product did not answer
    # in time, without asking it.
    assert error.code() == C.UNAVAILABLE, error
    assert "did not answer in time" in (error.details() or "")
    assert took < 0.25
    assert world.product.batch_calls == calls


async def test_a_spent_budget_fails_at_once_in_the_client(
    own_clients: Callable[[ConfigCenter], Awaitable[ServiceClients]],
    scripted: tuple[ScriptedProduct, ServiceHost],
) -> None:
    product, _ = scripted
    clients = await own_clients(fixed())
    with deadline_scope(0.01), pytest.raises(grpc.aio.AioRpcError) as caught:  # < 20 ms margin
        await clients.call(
            "product",
            product_pb2_grpc.ProductServiceStub,
            lambda s, t: s.GetProduct(product_pb2.GetProductRequest(), timeout=t),
            timeout=5.0,
        )
    assert caught.value.code() == C.DEADLINE_EXCEEDED
    assert reason(caught.value) == DEADLINE_BUDGET_SPENT
    assert product.get_calls == 0


# --- injected faults -------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def real_product(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningService]:
    await recreate_database(stack, "product")
    async with run_service(PRODUCT, stack, keys) as product:
        yield product


async def success_rate(clients: ServiceClients, keys: TestKeys, product_id: str, n: int) -> float:
    token = bearer(keys.token())  # a user of its own: rate limits are per caller
    ok = 0
    for _ in range(n):
        try:
            await clients.call(
                "product",
                product_pb2_grpc.ProductServiceStub,
                lambda s, t: s.GetProduct(
                    product_pb2.GetProductRequest(product_id=product_id),
                    timeout=t,
                    metadata=token,
                ),
                timeout=5.0,
                idempotent=True,
            )
            ok += 1
        except grpc.aio.AioRpcError as error:
            assert error.code() == C.UNAVAILABLE and reason(error) == "INJECTED_FAULT", error
    return ok / n


async def test_with_injected_faults_retries_raise_the_success_rate(
    real_product: RunningService,
    etcd: aetcd.Client,
    own_clients: Callable[[ConfigCenter], Awaitable[ServiceClients]],
    keys: TestKeys,
) -> None:
    admin: Any = product_pb2_grpc.ProductServiceStub(real_product.channel)
    created = await admin.CreateProduct(
        product_pb2.CreateProductRequest(
            sku=f"F-{uuid.uuid4().hex[:8].upper()}",
            title="Flaky",
            price=money_pb2.Money(amount_minor=100, currency="USD"),
            status=product_pb2.PRODUCT_STATUS_ACTIVE,
        ),
        metadata=bearer(keys.token(Role.ADMIN)),
    )
    product_id = created.product.product_id
    center = real_product.host.config
    await set_knobs(etcd, "product", {"faults": {"unavailable_rate": 0.3}}, center)
    assert center.current.faults.unavailable_rate == 0.3

    once = await own_clients(fixed(max_attempts=1))
    # A budget that a 30 % failure rate does not drain (a success earns a whole token).
    retried = await own_clients(
        fixed(max_attempts=4, budget_max_tokens=100, budget_token_ratio=1.0)
    )
    throttled = await own_clients(fixed(max_attempts=4))  # the default budget: 0.1 a success
    without = await success_rate(once, keys, product_id, 150)
    with_retries = await success_rate(retried, keys, product_id, 150)
    await success_rate(throttled, keys, product_id, 100)
    assert without < 0.85 < 0.95 < with_retries, (without, with_retries)
    assert retried.counters[("product", "retries")] > 20
    # A 30 % failure rate is more than the default budget allows for: it turns retries off.
    assert throttled.counters[("product", "retries_throttled")] > 0

    # Every call faulted: health still answers (probes must tell the truth).
    await set_knobs(etcd, "product", {"faults": {"unavailable_rate": 1.0}}, center)
    health = health_pb2_grpc.HealthStub(real_product.channel)
    for _ in range(20):
        reply = await health.Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.GetProduct(
            product_pb2.GetProductRequest(product_id=product_id),
            metadata=bearer(keys.token()),
        )
    assert caught.value.code() == C.UNAVAILABLE and reason(caught.value) == "INJECTED_FAULT"

"""Readiness follows the database, liveness does not, and Kafka holds up neither.

The database is cut for one instance only (a TCP proxy between it and the real
PostgreSQL), so the outage is real to that instance and nobody else.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.stack import Stack
from services.product.main import SERVICE as PRODUCT
from shared.registry.etcd import etcd_client, instance_key
from shared.rpc.server import LIVENESS
from shared.tls import ClientTLS
from shop.product.v1 import product_pb2, product_pb2_grpc
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tcp_proxy import TcpProxy
from tests.support.tokens import TestKeys, bearer

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest_asyncio.fixture(loop_scope="session")
async def database_proxy(stack: Stack) -> AsyncIterator[TcpProxy]:
    target = urlsplit(stack.pg_dsn("shop_product"))
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.open()
    yield proxy
    await proxy.cut()


@pytest_asyncio.fixture(loop_scope="session")
async def product(
    stack: Stack, keys: TestKeys, database_proxy: TcpProxy
) -> AsyncIterator[RunningService]:
    await recreate_database(stack, "product")
    dsn = stack.pg_dsn("shop_product").replace(
        f":{urlsplit(stack.pg_dsn('shop_product')).port}/", f":{database_proxy.port}/"
    )
    # Kafka's bootstrap names a port nobody listens on: the service must serve anyway.
    async with run_service(
        PRODUCT, stack, keys, pg_dsn=dsn, kafka_bootstrap="127.0.0.1:9", instance_id=new_id()
    ) as running:
        yield running


def new_id() -> str:
    return f"product-ready-{uuid.uuid4().hex[:6]}"


async def health(running: RunningService, service: str) -> int:
    reply = await health_pb2_grpc.HealthStub(running.channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=2
    )
    return int(reply.status)


async def registered(stack: Stack, running: RunningService) -> bool:
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    try:
        key = instance_key("product", running.host.settings.instance_id)
        return await client.get(key.encode()) is not None
    finally:
        await client.close()


async def eventually(check: object, timeout: float = 10.0) -> None:
    assert callable(check)
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def test_an_instance_withdraws_while_its_database_is_away_and_comes_back(
    stack: Stack, product: RunningService, database_proxy: TcpProxy, keys: TestKeys
) -> None:
    # Started with Kafka unreachable, and ready all the same.
    assert await health(product, "") == SERVING
    assert await health(product, "shop.product.v1.ProductService") == SERVING
    assert await registered(stack, product)

    await database_proxy.cut()
    await eventually(lambda: _is(product, "", NOT_SERVING))
    assert await health(product, "shop.product.v1.ProductService") == NOT_SERVING
    # Alive all the same: restarting the process would not bring the database back.
    assert await health(product, LIVENESS) == SERVING
    await eventually(lambda: _not(registered(stack, product)))
    # A call that reaches it anyway gets a clean refusal, not a stack trace.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await product_pb2_grpc.ProductServiceStub(product.channel).ListProducts(
            product_pb2.ListProductsRequest(), timeout=5, metadata=bearer(keys.token())
        )
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert "Error" not in (caught.value.details() or "")

    await database_proxy.open()
    await eventually(lambda: _is(product, "", SERVING))
    await eventually(lambda: registered(stack, product))
    reply = await product_pb2_grpc.ProductServiceStub(product.channel).ListProducts(
        product_pb2.ListProductsRequest(), timeout=5, metadata=bearer(keys.token())
    )
    assert list(reply.products) == []
    assert product.host.withdrawals == 1


async def _is(running: RunningService, service: str, status: int) -> bool:
    return await health(running, service) == status


async def _not(check: object) -> bool:
    assert asyncio.iscoroutine(check)
    return not await check

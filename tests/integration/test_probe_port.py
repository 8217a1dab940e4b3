"""The plaintext probe port: the health service for Kubernetes' kubelet, and nothing else."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.stack import Stack
from services.product.main import SERVICE as PRODUCT
from shop.product.v1 import product_pb2, product_pb2_grpc
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def product(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningService]:
    await recreate_database(stack, "product")
    # A fixed port is what a probe names; a free one is found for the test.
    async with run_service(PRODUCT, stack, keys, health_port=free_port()) as running:
        yield running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe_channel(running: RunningService) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{running.host.health_port}")


async def test_the_probe_port_answers_health_in_plaintext(product: RunningService) -> None:
    assert product.host.health_port == product.host.settings.health_port
    async with probe_channel(product) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_probe_port_serves_nothing_but_health(product: RunningService) -> None:
    async with probe_channel(product) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await product_pb2_grpc.ProductServiceStub(channel).ListProducts(
                product_pb2.ListProductsRequest(), timeout=2
            )
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_service_port_still_wants_a_client_certificate(product: RunningService) -> None:
    async with grpc.aio.insecure_channel(product.host.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

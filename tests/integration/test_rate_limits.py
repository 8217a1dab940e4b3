"""Rate limits on the real stack: per caller and per method, live from the config center.

Product and user run as real instances following the test stack's etcd; each test
writes ``/config/global`` with an aetcd client and waits until both have applied it.
The limits' rates are tiny (a token every 100 s), so nothing refills while a test runs
and no assertion depends on timing. A last test runs the chain itself, on a throwaway
server, to show every RPC shape is limited.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import aetcd
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.stack import Stack
from services.product.main import SERVICE as PRODUCT
from services.user.main import SERVICE as USER
from shared.auth.keys import load_public_key
from shared.auth.tokens import TokenVerifier
from shared.config.center import ConfigCenter, config_key
from shared.config.models import GlobalConfig, RateLimit, RateLimits
from shared.registry.etcd import etcd_client
from shared.rpc.interceptors.auth import AccessPolicy
from shared.rpc.interceptors.chain import default_chain
from shared.rpc.status import REASON_KEY, RETRY_AFTER_KEY
from shared.tls import ClientTLS
from shop.product.v1 import product_pb2, product_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import AUDIENCE, ISSUER, TestKeys, bearer

pytestmark = pytest.mark.integration

LIST_PRODUCTS = "/shop.product.v1.ProductService/ListProducts"
GET_PRODUCT = "/shop.product.v1.ProductService/GetProduct"
SERVICE_NAME = "shop.product.v1.ProductService"
REGISTER = "/shop.user.v1.UserService/Register"
LOGIN = "/shop.user.v1.UserService/Login"
GLACIAL = 0.01  # tokens per second: none comes back while a test runs
APPLY_TIMEOUT = 10.0

Apply = Callable[[dict[str, Any]], Awaitable[int]]


def tiny(burst: int) -> dict[str, Any]:
    return {"rate_per_second": GLACIAL, "burst": burst}


def per_method(**limits: dict[str, Any]) -> dict[str, Any]:
    return {"rate_limits": {"methods": dict(limits.items())}}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def product(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningService]:
    await recreate_database(stack, "product")
    async with run_service(PRODUCT, stack, keys) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def user(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningService]:
    await recreate_database(stack, "user")
    async with run_service(USER, stack, keys) as running:
        yield running


async def wait_for_revision(services: list[RunningService], revision: int) -> None:
    """Until every instance runs with the ``/config/global`` of ``revision`` (0: none)."""
    async with asyncio.timeout(APPLY_TIMEOUT):
        while any(s.host.config.current.revisions["global"] != revision for s in services):
            await asyncio.sleep(0.02)


@pytest_asyncio.fixture(loop_scope="session")
async def apply(
    stack: Stack, product: RunningService, user: RunningService
) -> AsyncIterator[Apply]:
    """Writes ``/config/global`` and waits until both services applied it; the document
    is always deleted at the end: later tests share this etcd."""
    client: aetcd.Client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    key = config_key("global").encode()

    async def put(document: dict[str, Any]) -> int:
        reply = await client.put(key, json.dumps(document).encode())
        revision = int(reply.header.revision)  # the key's mod_revision
        await wait_for_revision([product, user], revision)
        return revision

    try:
        yield put
    finally:
        try:
            await client.delete(key)
            await wait_for_revision([product, user], 0)
        finally:
            await client.close()


def product_stub(service: RunningService) -> Any:
    return product_pb2_grpc.ProductServiceStub(service.channel)


async def list_products(service: RunningService, token: str) -> product_pb2.ListProductsResponse:
    return await product_stub(service).ListProducts(
        product_pb2.ListProductsRequest(page_size=1), metadata=bearer(token), timeout=5
    )


def assert_rate_limited(error: grpc.aio.AioRpcError, method: str) -> int:
    """RESOURCE_EXHAUSTED with its reason and wait; returns the wait in ms."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    # grpc's stubs type the trailers as one pair; they are a sequence of pairs.
    trailers: dict[str, Any] = dict(cast(Any, error.trailing_metadata()) or ())
    assert trailers[REASON_KEY] == "RATE_LIMITED"
    wait_ms = int(trailers[RETRY_AFTER_KEY])
    assert wait_ms > 0
    details = error.details() or ""
    assert method in details and "retry in" in details
    assert "RateLimited" not in details  # no class name reaches a caller
    return wait_ms


async def test_a_caller_over_its_limit_is_refused_and_another_caller_is_not(
    product: RunningService, keys: TestKeys, apply: Apply
) -> None:
    await apply(per_method(**{LIST_PRODUCTS: tiny(burst=3)}))
    alice, bob = keys.token(), keys.token()  # two users

    for _ in range(3):
        await list_products(product, alice)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await list_products(product, alice)
    wait_ms = assert_rate_limited(refused.value, LIST_PRODUCTS)
    assert wait_ms > 50_000  # a token every 100 s: most of that is still to wait

    # Bob has a bucket of his own; Alice's other methods have theirs (the default limit).
    for _ in range(3):
        await list_products(product, bob)
    with pytest.raises(grpc.aio.AioRpcError) as not_found:
        await product_stub(product).GetProduct(
            product_pb2.GetProductRequest(product_id=str(uuid.uuid4())),
            metadata=bearer(alice),
            timeout=5,
        )
    assert not_found.value.code() == grpc.StatusCode.NOT_FOUND  # served, not limited
    # And Alice stays refused.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await list_products(product, alice)
    assert_rate_limited(again.value, LIST_PRODUCTS)


async def test_login_and_register_are_limited_per_peer(
    user: RunningService, keys: TestKeys, apply: Apply
) -> None:
    await apply(per_method(**{REGISTER: tiny(burst=2), LOGIN: tiny(burst=2)}))
    stub = user_pb2_grpc.UserServiceStub(user.channel)
    password = "limit-password-1"
    emails = [f"limited-{uuid.uuid4().hex[:10]}@example.com" for _ in range(3)]

    for email in emails[:2]:
        await stub.Register(user_pb2.RegisterRequest(email=email, password=password), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Register(user_pb2.RegisterRequest(email=emails[2], password=password), timeout=5)
    assert_rate_limited(refused.value, REGISTER)
    count_before = await user.count("users")

    # Login is a method of its own; the caller is the peer, whatever token comes along:
    # a public call does not trust a token it never checks.
    for email in emails[:2]:
        await stub.Login(
            user_pb2.LoginRequest(email=email, password=password),
            metadata=bearer(keys.token()),
            timeout=5,
        )
    with pytest.raises(grpc.aio.AioRpcError) as refused_login:
        await stub.Login(
            user_pb2.LoginRequest(email=emails[0], password=password),
            metadata=bearer(keys.token()),
            timeout=5,
        )
    assert_rate_limited(refused_login.value, LOGIN)
    # Another channel from the same host is the same peer.
    other = user.new_channel()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as from_another_port:
            await user_pb2_grpc.UserServiceStub(other).Login(
                user_pb2.LoginRequest(email=emails[1], password=password), timeout=5
            )
        assert_rate_limited(from_another_port.value, LOGIN)
    finally:
        await other.close(grace=None)
    assert await user.count("users") == count_before  # a refused Register wrote nothing


async def test_a_live_change_applies_without_a_restart(
    product: RunningService, keys: TestKeys, apply: Apply
) -> None:
    alice = keys.token()
    for _ in range(5):  # the defaults: 100 a second, bursts of 200
        await list_products(product, alice)

    # Tightened: Alice's bucket, nearly full at the old limit, holds 2 at the new one.
    await apply(per_method(**{LIST_PRODUCTS: tiny(burst=2)}))
    for _ in range(2):
        await list_products(product, alice)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await list_products(product, alice)
    assert_rate_limited(refused.value, LIST_PRODUCTS)

    # Loosened: Alice, still refused at the old limit, is served at the new one (a token
    # every microsecond since the swap).
    await apply(per_method(**{LIST_PRODUCTS: {"rate_per_second": 1_000_000, "burst": 5}}))
    await list_products(product, alice)

    # Switched off: everything passes.
    await apply({"rate_limits": {"enabled": False, "methods": {LIST_PRODUCTS: tiny(burst=2)}}})
    for _ in range(10):
        await list_products(product, alice)

    # Moved to another method: ListProducts is back on the default limit, GetProduct
    # is limited from its first call on.
    await apply(per_method(**{GET_PRODUCT: tiny(burst=1)}))
    bob = keys.token()
    for _ in range(3):
        await list_products(product, bob)
    get = product_pb2.GetProductRequest(product_id=str(uuid.uuid4()))
    with pytest.raises(grpc.aio.AioRpcError) as served:
        await product_stub(product).GetProduct(get, metadata=bearer(bob), timeout=5)
    assert served.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await product_stub(product).GetProduct(get, metadata=bearer(bob), timeout=5)
    assert_rate_limited(limited.value, GET_PRODUCT)


async def test_health_is_never_limited(
    product: RunningService, keys: TestKeys, apply: Apply
) -> None:
    # Every method of every service at one call per 100 s, bursts of 1.
    await apply({"rate_limits": {"default": tiny(burst=1)}})
    health = health_pb2_grpc.HealthStub(product.channel)
    for _ in range(50):
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        service = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        reply = await health.Check(service, timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # ...while the service's own methods are: one call, then refused.
    alice = keys.token()
    await list_products(product, alice)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await list_products(product, alice)
    assert_rate_limited(refused.value, LIST_PRODUCTS)


# --- every RPC shape, through the chain itself ----------------------------------------------

SHAPES_SERVICE = "test.ratelimit.v1.Shapes"
Request: TypeAlias = health_pb2.HealthCheckRequest
Reply: TypeAlias = health_pb2.HealthCheckResponse
SERVING = health_pb2.HealthCheckResponse.SERVING
SHAPES = ["Unary", "ServerStream", "ClientStream", "Bidi"]


async def _unary(request: Request, context: grpc.aio.ServicerContext) -> Reply:
    return Reply(status=SERVING)


async def _server_stream(
    request: Request, context: grpc.aio.ServicerContext
) -> AsyncIterator[Reply]:
    for _ in range(2):
        yield Reply(status=SERVING)


async def _client_stream(
    requests: AsyncIterator[Request], context: grpc.aio.ServicerContext
) -> Reply:
    async for _ in requests:
        pass
    return Reply(status=SERVING)


async def _bidi(
    requests: AsyncIterator[Request], context: grpc.aio.ServicerContext
) -> AsyncIterator[Reply]:
    async for _ in requests:
        yield Reply(status=SERVING)


def _shape_handlers() -> grpc.GenericRpcHandler:
    kw: dict[str, Any] = {
        "request_deserializer": Request.FromString,
        "response_serializer": Reply.SerializeToString,
    }
    return grpc.method_handlers_generic_handler(
        SHAPES_SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary, **kw),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream, **kw),
            "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream, **kw),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi, **kw),
        },
    )


@pytest_asyncio.fixture(loop_scope="session")
async def shapes_channel(keys: TestKeys) -> AsyncIterator[grpc.aio.Channel]:
    verifier = TokenVerifier([load_public_key(keys.public_key_file)], ISSUER, AUDIENCE)
    one_call_each = RateLimits(default=RateLimit(rate_per_second=GLACIAL, burst=1))
    config = ConfigCenter.fixed("product", GlobalConfig(rate_limits=one_call_each))
    server = grpc.aio.server(interceptors=default_chain(verifier, AccessPolicy({}), config))
    server.add_generic_rpc_handlers((_shape_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")  # a test server, not a service port
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


async def _invoke(channel: grpc.aio.Channel, shape: str, token: str) -> list[Reply]:
    kw: dict[str, Any] = {
        "request_serializer": Request.SerializeToString,
        "response_deserializer": Reply.FromString,
    }
    path, metadata, request = f"/{SHAPES_SERVICE}/{shape}", bearer(token), Request()
    if shape == "Unary":
        return [await channel.unary_unary(path, **kw)(request, metadata=metadata, timeout=5)]
    if shape == "ServerStream":
        call = channel.unary_stream(path, **kw)
        return [r async for r in call(request, metadata=metadata, timeout=5)]
    if shape == "ClientStream":
        client_stream = channel.stream_unary(path, **kw)
        return [await client_stream(iter([request]), metadata=metadata, timeout=5)]
    bidi = channel.stream_stream(path, **kw)
    return [r async for r in bidi(iter([request]), metadata=metadata, timeout=5)]


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_rpc_shape_is_limited(
    shapes_channel: grpc.aio.Channel, keys: TestKeys, shape: str
) -> None:
    token = keys.token()
    replies = await _invoke(shapes_channel, shape, token)
    assert replies and all(r.status == SERVING for r in replies)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _invoke(shapes_channel, shape, token)
    assert_rate_limited(refused.value, f"/{SHAPES_SERVICE}/{shape}")
    assert await _invoke(shapes_channel, shape, keys.token())  # another user: served

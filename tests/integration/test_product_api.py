"""ProductService over real gRPC and PostgreSQL: what only the wire and the database
prove (the SQL, the SKU's unique index, statuses and the access policy on the wire).
The rules themselves are proven without either in tests/unit/product/."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from devstack.stack import Stack
from services.product.main import SERVICE
from shared.auth.identity import Role
from shop.common.v1 import money_pb2
from shop.product.v1 import product_pb2 as pb
from shop.product.v1 import product_pb2_grpc
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys, bearer

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def product(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningService]:
    await recreate_database(stack, "product")
    async with run_service(SERVICE, stack, keys) as running:
        yield running


@pytest.fixture(scope="module")
def stub(product: RunningService) -> product_pb2_grpc.ProductServiceStub:
    return product_pb2_grpc.ProductServiceStub(product.channel)


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency="USD")


def new_sku() -> str:
    return f"T-{uuid.uuid4().hex[:10].upper()}"


async def create(stub: Any, keys: TestKeys, **fields: Any) -> pb.Product:
    request = pb.CreateProductRequest(
        sku=fields.pop("sku", new_sku()),
        title=fields.pop("title", "A thing"),
        price=fields.pop("price", usd(1999)),
        **fields,
    )
    reply = await stub.CreateProduct(request, metadata=bearer(keys.token(Role.ADMIN)))
    return reply.product


async def test_admin_writes_and_anyone_signed_in_reads(stub: Any, keys: TestKeys) -> None:
    created = await create(stub, keys, title="Before", description="keep me")
    assert created.status == pb.PRODUCT_STATUS_ACTIVE
    customer = bearer(keys.token(Role.CUSTOMER))
    reply = await stub.GetProduct(
        pb.GetProductRequest(product_id=created.product_id), metadata=customer
    )
    assert reply.product == created
    assert reply.product.price.amount_minor == 1999
    updated = await stub.UpdateProduct(
        pb.UpdateProductRequest(
            product_id=created.product_id,
            title="After",
            price=usd(2500),
            status=pb.PRODUCT_STATUS_ARCHIVED,
        ),
        metadata=bearer(keys.token(Role.ADMIN)),
    )
    reply = await stub.GetProduct(
        pb.GetProductRequest(product_id=created.product_id), metadata=customer
    )
    assert reply.product == updated.product
    assert (reply.product.title, reply.product.description) == ("After", "keep me")
    assert (reply.product.price, reply.product.status) == (usd(2500), pb.PRODUCT_STATUS_ARCHIVED)


async def test_batch_get_reports_missing_ids(stub: Any, keys: TestKeys) -> None:
    a, b = await create(stub, keys), await create(stub, keys)
    missing = str(uuid.uuid4())
    reply = await stub.BatchGetProducts(
        pb.BatchGetProductsRequest(product_ids=[a.product_id, b.product_id, missing]),
        metadata=bearer(keys.token()),
    )
    assert {p.product_id for p in reply.products} == {a.product_id, b.product_id}
    assert list(reply.missing_product_ids) == [missing]


async def test_list_pages_through_everything_once_and_filters_by_status(
    stub: Any, keys: TestKeys
) -> None:
    for _ in range(5):
        await create(stub, keys, status=pb.PRODUCT_STATUS_DRAFT)
    seen: list[str] = []
    token = ""
    while True:
        reply = await stub.ListProducts(
            pb.ListProductsRequest(page_size=2, page_token=token), metadata=bearer(keys.token())
        )
        assert len(reply.products) <= 2
        seen.extend(p.product_id for p in reply.products)
        token = reply.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) >= 5
    drafts = await stub.ListProducts(
        pb.ListProductsRequest(page_size=100, status=pb.PRODUCT_STATUS_DRAFT),
        metadata=bearer(keys.token()),
    )
    assert len(drafts.products) >= 5
    assert all(p.status == pb.PRODUCT_STATUS_DRAFT for p in drafts.products)


async def test_health_and_reflection_need_no_token(product: RunningService) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reply = await health_pb2_grpc.HealthStub(product.channel).Check(
        health_pb2.HealthCheckRequest(service="shop.product.v1.ProductService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


EXISTING = "existing"  # replaced by the id of a real product at run time
ADMIN, CUSTOMER, NONE, EXPIRED = "admin", "customer", "none", "expired"
C = grpc.StatusCode

BAD_INPUTS: list[tuple[str, str, Any, str, grpc.StatusCode]] = [
    # What the wire and the database decide: the access policy, tokens, the unique SKU, and
    # how a refusal travels (its status, nothing written). Each field's own checks are
    # proven in tests/unit/product/.
    (
        "create: bad sku",
        "CreateProduct",
        pb.CreateProductRequest(sku="bad sku!", title="x", price=usd(1)),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "create: duplicate sku",
        "CreateProduct",
        pb.CreateProductRequest(sku="DUP-SKU", title="x", price=usd(1)),
        ADMIN,
        C.ALREADY_EXISTS,
    ),
    (
        "create: customer",
        "CreateProduct",
        pb.CreateProductRequest(sku="CUST-1", title="x", price=usd(1)),
        CUSTOMER,
        C.PERMISSION_DENIED,
    ),
    (
        "create: no token",
        "CreateProduct",
        pb.CreateProductRequest(sku="ANON-1", title="x", price=usd(1)),
        NONE,
        C.UNAUTHENTICATED,
    ),
    (
        "create: expired token",
        "CreateProduct",
        pb.CreateProductRequest(sku="EXP-1", title="x", price=usd(1)),
        EXPIRED,
        C.UNAUTHENTICATED,
    ),
    (
        "update: unknown id",
        "UpdateProduct",
        pb.UpdateProductRequest(product_id=str(uuid.UUID(int=1)), title="x"),
        ADMIN,
        C.NOT_FOUND,
    ),
    (
        "update: customer",
        "UpdateProduct",
        pb.UpdateProductRequest(product_id=EXISTING, title="x"),
        CUSTOMER,
        C.PERMISSION_DENIED,
    ),
    (
        "update: no token",
        "UpdateProduct",
        pb.UpdateProductRequest(product_id=EXISTING, title="x"),
        NONE,
        C.UNAUTHENTICATED,
    ),
    (
        "update: expired",
        "UpdateProduct",
        pb.UpdateProductRequest(product_id=EXISTING, title="x"),
        EXPIRED,
        C.UNAUTHENTICATED,
    ),
    (
        "get: no token",
        "GetProduct",
        pb.GetProductRequest(product_id=EXISTING),
        NONE,
        C.UNAUTHENTICATED,
    ),
    (
        "get: expired",
        "GetProduct",
        pb.GetProductRequest(product_id=EXISTING),
        EXPIRED,
        C.UNAUTHENTICATED,
    ),
    (
        "batch: no token",
        "BatchGetProducts",
        pb.BatchGetProductsRequest(product_ids=[EXISTING]),
        NONE,
        C.UNAUTHENTICATED,
    ),
    (
        "batch: expired",
        "BatchGetProducts",
        pb.BatchGetProductsRequest(product_ids=[EXISTING]),
        EXPIRED,
        C.UNAUTHENTICATED,
    ),
    ("list: no token", "ListProducts", pb.ListProductsRequest(), NONE, C.UNAUTHENTICATED),
    ("list: expired", "ListProducts", pb.ListProductsRequest(), EXPIRED, C.UNAUTHENTICATED),
]


def metadata_for(who: str, keys: TestKeys) -> tuple[tuple[str, str], ...]:
    if who == NONE:
        return ()
    if who == EXPIRED:
        return bearer(keys.expired_token(Role.ADMIN))
    return bearer(keys.token(Role.ADMIN if who == ADMIN else Role.CUSTOMER))


@pytest.mark.parametrize(
    ("case", "method", "request_", "who", "code"), BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS]
)
async def test_bad_input_is_rejected_with_the_right_code_and_writes_nothing(
    stub: Any,
    product: RunningService,
    keys: TestKeys,
    case: str,
    method: str,
    request_: Any,
    who: str,
    code: grpc.StatusCode,
) -> None:
    existing = await create(stub, keys, sku="DUP-SKU") if case == "create: duplicate sku" else None
    existing = existing or await create(stub, keys)
    request = type(request_)()
    request.CopyFrom(request_)
    if getattr(request, "product_id", None) == EXISTING:
        request.product_id = existing.product_id
    if hasattr(request, "product_ids"):
        ids = [existing.product_id if i == EXISTING else i for i in request.product_ids]
        del request.product_ids[:]
        request.product_ids.extend(ids)
    rows_before = await product.count("products")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(stub, method)(request, metadata=metadata_for(who, keys))
    assert raised.value.code() == code, raised.value.details()
    assert raised.value.details()
    assert await product.count("products") == rows_before
    unchanged = await stub.GetProduct(
        pb.GetProductRequest(product_id=existing.product_id), metadata=metadata_for(ADMIN, keys)
    )
    assert unchanged.product == existing


async def test_a_query_matches_title_or_sku_words_case_insensitively_and_literally(
    stub: Any, keys: TestKeys
) -> None:
    tag = uuid.uuid4().hex[:8]
    mug = await create(stub, keys, title=f"Blue {tag} Mug")
    tee = await create(stub, keys, sku=f"TEE-{tag.upper()}", title="Plain")
    await create(stub, keys, title=f"Blue {tag[:4]}%{tag[5:]} odd")  # % must not be a wildcard
    token = bearer(keys.token())

    async def found(query: str) -> set[str]:
        reply = await stub.ListProducts(
            pb.ListProductsRequest(page_size=100, query=query), metadata=token
        )
        return {p.product_id for p in reply.products}

    assert await found(tag.upper()) == {mug.product_id, tee.product_id}
    assert await found(f"mug {tag}") == {mug.product_id}
    assert await found(f"{tag[:4]}_{tag[5:]}") == set()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await found("x" * 101)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

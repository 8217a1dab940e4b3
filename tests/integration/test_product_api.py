"""ProductService over real gRPC and PostgreSQL: behaviour and every bad input."""

from __future__ import annotations

import base64
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


async def test_admin_creates_and_anyone_signed_in_reads(stub: Any, keys: TestKeys) -> None:
    created = await create(stub, keys, description="soft")
    assert created.status == pb.PRODUCT_STATUS_ACTIVE
    reply = await stub.GetProduct(
        pb.GetProductRequest(product_id=created.product_id),
        metadata=bearer(keys.token(Role.CUSTOMER)),
    )
    assert reply.product == created
    assert reply.product.price.amount_minor == 1999


async def test_update_changes_only_the_fields_set(stub: Any, keys: TestKeys) -> None:
    created = await create(stub, keys, title="Before", description="keep me")
    reply = await stub.UpdateProduct(
        pb.UpdateProductRequest(
            product_id=created.product_id, title="After", status=pb.PRODUCT_STATUS_ARCHIVED
        ),
        metadata=bearer(keys.token(Role.ADMIN)),
    )
    assert (reply.product.title, reply.product.description) == ("After", "keep me")
    assert reply.product.status == pb.PRODUCT_STATUS_ARCHIVED
    assert reply.product.price == created.price


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
    # CreateProduct
    ("create: empty", "CreateProduct", pb.CreateProductRequest(), ADMIN, C.INVALID_ARGUMENT),
    (
        "create: bad sku",
        "CreateProduct",
        pb.CreateProductRequest(sku="bad sku!", title="x", price=usd(1)),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "create: negative price",
        "CreateProduct",
        pb.CreateProductRequest(sku="NEG-1", title="x", price=usd(-5)),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "create: zero price",
        "CreateProduct",
        pb.CreateProductRequest(sku="ZERO-1", title="x", price=usd(0)),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "create: oversized price",
        "CreateProduct",
        pb.CreateProductRequest(sku="BIG-1", title="x", price=usd(10**15)),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "create: bad currency",
        "CreateProduct",
        pb.CreateProductRequest(
            sku="CUR-1", title="x", price=money_pb2.Money(amount_minor=1, currency="usd")
        ),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "create: oversized title",
        "CreateProduct",
        pb.CreateProductRequest(sku="LONG-1", title="x" * 201, price=usd(1)),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "create: oversized sku",
        "CreateProduct",
        pb.CreateProductRequest(sku="S" * 65, title="x", price=usd(1)),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "create: unknown status",
        "CreateProduct",
        pb.CreateProductRequest(sku="ST-1", title="x", price=usd(1), status=99),  # type: ignore[arg-type]
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
    # UpdateProduct
    ("update: empty", "UpdateProduct", pb.UpdateProductRequest(), ADMIN, C.INVALID_ARGUMENT),
    (
        "update: not a uuid",
        "UpdateProduct",
        pb.UpdateProductRequest(product_id="42"),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "update: unknown id",
        "UpdateProduct",
        pb.UpdateProductRequest(product_id=str(uuid.UUID(int=1)), title="x"),
        ADMIN,
        C.NOT_FOUND,
    ),
    (
        "update: negative price",
        "UpdateProduct",
        pb.UpdateProductRequest(product_id=EXISTING, price=usd(-1)),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "update: blank title",
        "UpdateProduct",
        pb.UpdateProductRequest(product_id=EXISTING, title="  "),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "update: other currency",
        "UpdateProduct",
        pb.UpdateProductRequest(
            product_id=EXISTING, price=money_pb2.Money(amount_minor=5, currency="EUR")
        ),
        ADMIN,
        C.INVALID_ARGUMENT,
    ),
    (
        "update: oversized description",
        "UpdateProduct",
        pb.UpdateProductRequest(product_id=EXISTING, description="d" * 2001),
        ADMIN,
        C.INVALID_ARGUMENT,
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
    # GetProduct
    ("get: empty", "GetProduct", pb.GetProductRequest(), CUSTOMER, C.INVALID_ARGUMENT),
    (
        "get: not a uuid",
        "GetProduct",
        pb.GetProductRequest(product_id="x" * 5000),
        CUSTOMER,
        C.INVALID_ARGUMENT,
    ),
    (
        "get: unknown id",
        "GetProduct",
        pb.GetProductRequest(product_id=str(uuid.UUID(int=2))),
        CUSTOMER,
        C.NOT_FOUND,
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
    # BatchGetProducts
    (
        "batch: empty",
        "BatchGetProducts",
        pb.BatchGetProductsRequest(),
        CUSTOMER,
        C.INVALID_ARGUMENT,
    ),
    (
        "batch: oversized",
        "BatchGetProducts",
        pb.BatchGetProductsRequest(product_ids=[str(uuid.uuid4()) for _ in range(101)]),
        CUSTOMER,
        C.INVALID_ARGUMENT,
    ),
    (
        "batch: not a uuid",
        "BatchGetProducts",
        pb.BatchGetProductsRequest(product_ids=[EXISTING, "nope"]),
        CUSTOMER,
        C.INVALID_ARGUMENT,
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
    # ListProducts
    (
        "list: negative page size",
        "ListProducts",
        pb.ListProductsRequest(page_size=-1),
        CUSTOMER,
        C.INVALID_ARGUMENT,
    ),
    (
        "list: oversized page",
        "ListProducts",
        pb.ListProductsRequest(page_size=101),
        CUSTOMER,
        C.INVALID_ARGUMENT,
    ),
    (
        "list: forged token",
        "ListProducts",
        pb.ListProductsRequest(page_token="garbage!"),
        CUSTOMER,
        C.INVALID_ARGUMENT,
    ),
    (
        "list: token of wrong shape",
        "ListProducts",
        pb.ListProductsRequest(page_token="eyJ0IjogMX0="),
        CUSTOMER,
        C.INVALID_ARGUMENT,
    ),
    (
        # Found by the fuzzer (tests/fuzz): the driver's UTC conversion overflowed, INTERNAL.
        "list: token with a time that overflows in UTC",
        "ListProducts",
        pb.ListProductsRequest(
            page_token=base64.urlsafe_b64encode(
                b'{"t": "0001-01-01T00:00:00+14:00", "id": "e3e70682-c209-4cac-629f-6fbed82c07cd"}'
            ).decode()
        ),
        CUSTOMER,
        C.INVALID_ARGUMENT,
    ),
    (
        # Found by the fuzzer: JSON nested past the parser's recursion limit, INTERNAL.
        "list: token of deeply nested JSON",
        "ListProducts",
        pb.ListProductsRequest(
            page_token=base64.urlsafe_b64encode(b"[" * 2001 + b"0" + b"]" * 2001).decode()
        ),
        CUSTOMER,
        C.INVALID_ARGUMENT,
    ),
    (
        "list: token with a time without offset",
        "ListProducts",
        pb.ListProductsRequest(
            page_token=base64.urlsafe_b64encode(
                b'{"t": "9999-12-31T23:59:59", "id": "e3e70682-c209-4cac-629f-6fbed82c07cd"}'
            ).decode()
        ),
        CUSTOMER,
        C.INVALID_ARGUMENT,
    ),
    (
        "list: unknown status",
        "ListProducts",
        pb.ListProductsRequest(status=42),  # type: ignore[arg-type]
        CUSTOMER,
        C.INVALID_ARGUMENT,
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

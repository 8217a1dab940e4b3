"""ProductServicer on the fake unit of work, called directly (no server, no wire): what
the gRPC layer itself decides (which fields a request sets, proto enums and money,
request sizes), and that a refused request writes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.product.grpc_api import MAX_BATCH, ProductServicer
from shared.errors import InvalidArgument, NotFound
from shop.common.v1 import money_pb2
from shop.product.v1 import product_pb2 as pb
from tests.unit.product.fakes import FakeProductReads, FakeProductUnitOfWork

CONTEXT: Any = None  # the servicer never looks at it


@pytest.fixture
def uow() -> FakeProductUnitOfWork:
    return FakeProductUnitOfWork()


@pytest.fixture
def servicer(uow: FakeProductUnitOfWork) -> ProductServicer:
    return ProductServicer(uow, FakeProductReads(uow))


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency="USD")


async def create(servicer: ProductServicer, **fields: Any) -> pb.Product:
    request = pb.CreateProductRequest(
        sku=fields.pop("sku", f"T-{uuid.uuid4().hex[:10].upper()}"),
        title=fields.pop("title", "A thing"),
        price=fields.pop("price", usd(1999)),
        **fields,
    )
    return (await servicer.CreateProduct(request, CONTEXT)).product


async def test_create_then_get_round_trips_every_field(servicer) -> None:
    created = await create(servicer, description="soft")
    assert created.status == pb.PRODUCT_STATUS_ACTIVE  # unspecified: active
    assert created.price == usd(1999) and created.description == "soft"
    assert created.created_at == created.updated_at and created.created_at.seconds > 0
    got = await servicer.GetProduct(pb.GetProductRequest(product_id=created.product_id), CONTEXT)
    assert got.product == created
    draft = await create(servicer, status=pb.PRODUCT_STATUS_DRAFT)
    assert draft.status == pb.PRODUCT_STATUS_DRAFT


async def test_update_changes_only_the_fields_the_request_sets(servicer) -> None:
    created = await create(servicer, title="Before", description="keep me")
    reply = await servicer.UpdateProduct(
        pb.UpdateProductRequest(
            product_id=created.product_id, title="After", status=pb.PRODUCT_STATUS_ARCHIVED
        ),
        CONTEXT,
    )
    assert (reply.product.title, reply.product.description) == ("After", "keep me")
    assert reply.product.status == pb.PRODUCT_STATUS_ARCHIVED
    assert reply.product.price == created.price
    # An empty string that is set is a value, not "keep".
    cleared = await servicer.UpdateProduct(
        pb.UpdateProductRequest(product_id=created.product_id, description=""), CONTEXT
    )
    assert (cleared.product.description, cleared.product.title) == ("", "After")


async def test_batch_get_reports_missing_ids_and_asks_once_per_id(servicer) -> None:
    a = await create(servicer)
    missing = str(uuid.uuid4())
    reply = await servicer.BatchGetProducts(
        pb.BatchGetProductsRequest(product_ids=[a.product_id, missing, a.product_id, missing]),
        CONTEXT,
    )
    assert [p.product_id for p in reply.products] == [a.product_id]
    assert list(reply.missing_product_ids) == [missing]


async def test_list_pages_and_filters_with_proto_statuses(servicer) -> None:
    drafts = [await create(servicer, status=pb.PRODUCT_STATUS_DRAFT) for _ in range(3)]
    await create(servicer)
    first = await servicer.ListProducts(
        pb.ListProductsRequest(page_size=2, status=pb.PRODUCT_STATUS_DRAFT), CONTEXT
    )
    rest = await servicer.ListProducts(
        pb.ListProductsRequest(
            page_size=2, status=pb.PRODUCT_STATUS_DRAFT, page_token=first.next_page_token
        ),
        CONTEXT,
    )
    assert [p.product_id for p in [*first.products, *rest.products]] == [
        d.product_id for d in drafts
    ]
    assert first.next_page_token and not rest.next_page_token
    everything = await servicer.ListProducts(pb.ListProductsRequest(), CONTEXT)
    assert len(everything.products) == 4  # page size 0: the default page


EXISTING = "existing"  # replaced by the id of a real product at run time

BAD_REQUESTS: dict[str, tuple[str, Any, str]] = {
    "create: empty": ("CreateProduct", pb.CreateProductRequest(), "price.currency"),
    "create: negative price": (
        "CreateProduct",
        pb.CreateProductRequest(sku="NEG-1", title="x", price=usd(-5)),
        "price.amount_minor",
    ),
    "create: zero price": (
        "CreateProduct",
        pb.CreateProductRequest(sku="ZERO-1", title="x", price=usd(0)),
        "price.amount_minor",
    ),
    "create: oversized price": (
        "CreateProduct",
        pb.CreateProductRequest(sku="BIG-1", title="x", price=usd(10**15)),
        "price.amount_minor",
    ),
    "create: bad currency": (
        "CreateProduct",
        pb.CreateProductRequest(
            sku="CUR-1", title="x", price=money_pb2.Money(amount_minor=1, currency="usd")
        ),
        "price.currency",
    ),
    "create: unknown status": (
        "CreateProduct",
        pb.CreateProductRequest(sku="ST-1", title="x", price=usd(1), status=99),  # type: ignore[arg-type]
        "status",
    ),
    "create: bad sku": (
        "CreateProduct",
        pb.CreateProductRequest(sku="bad sku!", title="x", price=usd(1)),
        "sku",
    ),
    "update: empty": ("UpdateProduct", pb.UpdateProductRequest(), "product_id"),
    "update: not a uuid": ("UpdateProduct", pb.UpdateProductRequest(product_id="42"), "product_id"),
    "update: negative price": (
        "UpdateProduct",
        pb.UpdateProductRequest(product_id=EXISTING, price=usd(-1)),
        "price.amount_minor",
    ),
    "update: unknown status": (
        "UpdateProduct",
        pb.UpdateProductRequest(product_id=EXISTING, status=7),  # type: ignore[arg-type]
        "status",
    ),
    "update: other currency": (
        "UpdateProduct",
        pb.UpdateProductRequest(
            product_id=EXISTING, price=money_pb2.Money(amount_minor=5, currency="EUR")
        ),
        "price.currency",
    ),
    "get: empty": ("GetProduct", pb.GetProductRequest(), "product_id"),
    "get: not a uuid": ("GetProduct", pb.GetProductRequest(product_id="x" * 5000), "product_id"),
    "batch: empty": ("BatchGetProducts", pb.BatchGetProductsRequest(), "product_ids"),
    "batch: oversized": (
        "BatchGetProducts",
        pb.BatchGetProductsRequest(product_ids=[str(uuid.uuid4()) for _ in range(MAX_BATCH + 1)]),
        "product_ids",
    ),
    "batch: not a uuid": (
        "BatchGetProducts",
        pb.BatchGetProductsRequest(product_ids=[EXISTING, "nope"]),
        "product_ids[1]",
    ),
    "list: negative page size": ("ListProducts", pb.ListProductsRequest(page_size=-1), "page_size"),
    "list: oversized page": ("ListProducts", pb.ListProductsRequest(page_size=101), "page_size"),
    "list: forged token": (
        "ListProducts",
        pb.ListProductsRequest(page_token="garbage!"),
        "page_token",
    ),
    "list: unknown status": (
        "ListProducts",
        pb.ListProductsRequest(status=42),  # type: ignore[arg-type]
        "status",
    ),
}


@pytest.mark.parametrize(("method", "request_", "field"), BAD_REQUESTS.values(), ids=BAD_REQUESTS)
async def test_a_bad_request_names_its_field_and_writes_nothing(
    servicer, uow, method, request_, field
) -> None:
    existing = await create(servicer)
    before = dict(uow.products.rows)
    request = type(request_)()
    request.CopyFrom(request_)
    if getattr(request, "product_id", None) == EXISTING:
        request.product_id = existing.product_id
    if hasattr(request, "product_ids"):
        ids = [existing.product_id if i == EXISTING else i for i in request.product_ids]
        del request.product_ids[:]
        request.product_ids.extend(ids)
    with pytest.raises(InvalidArgument) as refused:
        await getattr(servicer, method)(request, CONTEXT)
    assert refused.value.field == field
    assert uow.products.rows == before


async def test_unknown_ids_are_not_found(servicer) -> None:
    unknown = str(uuid.UUID(int=1))
    with pytest.raises(NotFound):
        await servicer.GetProduct(pb.GetProductRequest(product_id=unknown), CONTEXT)
    with pytest.raises(NotFound):
        await servicer.UpdateProduct(
            pb.UpdateProductRequest(product_id=unknown, title="x"), CONTEXT
        )

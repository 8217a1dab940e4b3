"""The catalog's use cases on the fake unit of work: creating, revising, reading and
paging through products, and every rule that refuses a request. No database."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from services.product import use_cases
from services.product.domain import MAX_DESCRIPTION, MAX_TITLE, Product, ProductStatus
from shared.errors import AlreadyExists, InvalidArgument, NotFound
from shared.money import Money
from shared.validation import encode_page_token
from tests.unit.product.fakes import FakeProductReads, FakeProductUnitOfWork

USD = "USD"


@pytest.fixture
def uow() -> FakeProductUnitOfWork:
    return FakeProductUnitOfWork()


async def create(uow: FakeProductUnitOfWork, **fields: Any) -> Product:
    return await use_cases.create_product(
        uow,
        sku=fields.pop("sku", f"T-{uuid.uuid4().hex[:10].upper()}"),
        title=fields.pop("title", "A thing"),
        description=fields.pop("description", ""),
        price=fields.pop("price", Money(1999, USD)),
        status=fields.pop("status", None),
    )


async def update(uow: FakeProductUnitOfWork, product_id: uuid.UUID, **fields: Any) -> Product:
    return await use_cases.update_product(
        uow,
        product_id,
        title=fields.get("title"),
        description=fields.get("description"),
        price=fields.get("price"),
        status=fields.get("status"),
    )


def token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


# --- CreateProduct -------------------------------------------------------------------------------


async def test_create_stores_an_active_product_unless_told_otherwise(uow) -> None:
    created = await create(uow, title="  Soft socks ", description="soft\nand warm")
    assert created.status is ProductStatus.ACTIVE and created.sellable
    assert (created.title, created.description) == ("Soft socks", "soft\nand warm")
    assert created.created_at == created.updated_at
    assert uow.products.rows == {created.product_id: created}
    draft = await create(uow, status=ProductStatus.DRAFT)
    assert uow.products.rows[draft.product_id].status is ProductStatus.DRAFT


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"sku": ""}, "sku"),
        ({"sku": "bad sku!"}, "sku"),
        ({"sku": "lower-case"}, "sku"),
        ({"sku": "-LEADING-DASH"}, "sku"),
        ({"sku": "S"}, "sku"),
        ({"sku": "S" * 65}, "sku"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * (MAX_TITLE + 1)}, "title"),
        ({"title": "two\nlines"}, "title"),
        ({"title": "nul\x00"}, "title"),
        ({"description": "d" * (MAX_DESCRIPTION + 1)}, "description"),
    ],
)
async def test_create_refuses_what_the_catalog_cannot_hold(uow, fields, field) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await create(uow, **fields)
    assert refused.value.field == field
    assert uow.products.rows == {} and uow.commits == 0


async def test_a_sku_is_taken_once(uow) -> None:
    first = await create(uow, sku="DUP-SKU")
    with pytest.raises(AlreadyExists):
        await create(uow, sku="DUP-SKU", title="Another")
    assert list(uow.products.rows.values()) == [first]
    assert uow.rollbacks == 1


# --- UpdateProduct -------------------------------------------------------------------------------


async def test_update_changes_only_the_fields_given_under_the_rows_lock(uow) -> None:
    created = await create(uow, title="Before", description="keep me")
    updated = await update(uow, created.product_id, title="After", status=ProductStatus.ARCHIVED)
    assert (updated.title, updated.description) == ("After", "keep me")
    assert updated.status is ProductStatus.ARCHIVED and not updated.sellable
    assert (updated.price, updated.sku, updated.created_at) == (
        created.price,
        created.sku,
        created.created_at,
    )
    assert updated.updated_at >= created.updated_at
    assert uow.products.rows[created.product_id] == updated
    assert uow.products.locked == [created.product_id]
    repriced = await update(uow, created.product_id, price=Money(2500, USD), description="")
    assert (repriced.price, repriced.description, repriced.title) == (
        Money(2500, USD),
        "",
        "After",
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": "  "}, "title"),
        ({"title": "x" * (MAX_TITLE + 1)}, "title"),
        ({"description": "d" * (MAX_DESCRIPTION + 1)}, "description"),
        ({"price": Money(5, "EUR")}, "price.currency"),
    ],
)
async def test_a_refused_update_changes_nothing(uow, fields, field) -> None:
    created = await create(uow)
    with pytest.raises(InvalidArgument) as refused:
        await update(uow, created.product_id, **fields)
    assert refused.value.field == field
    assert uow.products.rows == {created.product_id: created}


async def test_updating_an_unknown_product_is_not_found(uow) -> None:
    with pytest.raises(NotFound):
        await update(uow, uuid.uuid4(), title="x")
    assert uow.products.rows == {}


# --- GetProduct, BatchGetProducts ----------------------------------------------------------------


async def test_get_reads_through_the_read_path(uow) -> None:
    created = await create(uow)
    reads = FakeProductReads(uow)
    assert await use_cases.get_product(reads, created.product_id) == created
    with pytest.raises(NotFound):
        await use_cases.get_product(reads, uuid.uuid4())


async def test_batch_get_reports_the_missing_ids_in_the_order_asked(uow) -> None:
    a, b = await create(uow), await create(uow)
    gone, unknown = uuid.uuid4(), uuid.uuid4()
    reads = FakeProductReads(uow)
    found, missing = await use_cases.batch_get_products(
        reads, [gone, b.product_id, unknown, a.product_id]
    )
    assert {p.product_id for p in found} == {a.product_id, b.product_id}
    assert missing == [gone, unknown]
    assert reads.reads == 1  # one read for the whole batch


# --- ListProducts --------------------------------------------------------------------------------


async def pages(uow: FakeProductUnitOfWork, limit: int, **filters: Any) -> list[list[Product]]:
    seen: list[list[Product]] = []
    page_token = ""
    while True:
        page = await use_cases.list_products(
            uow, limit=limit, status=filters.get("status"), page_token=page_token
        )
        seen.append(page.products)
        page_token = page.next_page_token
        if not page_token:
            return seen


async def test_pages_hold_every_product_once_in_creation_order(uow) -> None:
    created = [await create(uow) for _ in range(5)]
    by_page = await pages(uow, limit=2)
    assert [len(p) for p in by_page] == [2, 2, 1]
    order = sorted(created, key=lambda p: (p.created_at, p.product_id))
    assert [p for page in by_page for p in page] == order


async def test_a_full_last_page_says_there_is_no_next_one(uow) -> None:
    for _ in range(4):
        await create(uow)
    assert [len(p) for p in await pages(uow, limit=2)] == [2, 2]
    assert [len(p) for p in await pages(uow, limit=4)] == [4]
    empty = await use_cases.list_products(
        FakeProductUnitOfWork(), limit=3, status=None, page_token=""
    )
    assert empty == use_cases.ProductPage([], "")


async def test_a_product_added_meanwhile_does_not_shift_the_next_page(uow) -> None:
    first = [await create(uow) for _ in range(3)]
    page = await use_cases.list_products(uow, limit=2, status=None, page_token="")
    added = await create(uow)  # created later: it sorts last
    rest = await use_cases.list_products(
        uow, limit=10, status=None, page_token=page.next_page_token
    )
    assert page.products == first[:2]
    assert rest.products == [first[2], added]


async def test_list_filters_by_status(uow) -> None:
    drafts = [await create(uow, status=ProductStatus.DRAFT) for _ in range(3)]
    await create(uow)
    await create(uow, status=ProductStatus.ARCHIVED)
    by_page = await pages(uow, limit=2, status=ProductStatus.DRAFT)
    assert [p for page in by_page for p in page] == drafts


async def test_a_page_token_names_the_last_product_of_its_page(uow) -> None:
    created = [await create(uow) for _ in range(3)]
    page = await use_cases.list_products(uow, limit=1, status=None, page_token="")
    assert use_cases.page_after(page.next_page_token) == (
        created[0].created_at,
        created[0].product_id,
    )


@pytest.mark.parametrize(
    "page_token",
    [
        "garbage!",
        token(b'{"t": 1}'),  # the wrong shape
        token(b'{"id": "e3e70682-c209-4cac-629f-6fbed82c07cd"}'),
        token(b'{"t": "2024-01-01T00:00:00+00:00"}'),
        token(b'{"t": "2024-01-01T00:00:00+00:00", "id": "not-a-uuid"}'),
        token(b'{"t": "2024-01-01T00:00:00+00:00", "id": 7}'),
        token(b'{"t": "yesterday", "id": "e3e70682-c209-4cac-629f-6fbed82c07cd"}'),
        token(b"[1, 2]"),
        # Without an offset the time is ambiguous: no token this service issues lacks one.
        token(b'{"t": "9999-12-31T23:59:59", "id": "e3e70682-c209-4cac-629f-6fbed82c07cd"}'),
        # In UTC this is before year 1: the driver's conversion would overflow (INTERNAL).
        token(b'{"t": "0001-01-01T00:00:00+14:00", "id": "e3e70682-c209-4cac-629f-6fbed82c07cd"}'),
        # Nested past the JSON parser's recursion limit.
        token(b"[" * 2001 + b"0" + b"]" * 2001),
        encode_page_token({"t": "2024-01-01T00:00:00+00:00", "id": "x" * 600}),
    ],
)
async def test_a_page_token_this_service_did_not_issue_is_refused(uow, page_token) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await use_cases.list_products(uow, limit=10, status=None, page_token=page_token)
    assert refused.value.field == "page_token"
    assert uow.commits == 0  # refused before any unit of work


async def test_a_query_keeps_the_products_whose_title_or_sku_holds_every_word(uow) -> None:
    mug = await create(uow, title="Blue Coffee Mug", sku="MUG-1")
    await create(uow, title="Blue T-shirt", sku="TEE-1")
    cup = await create(uow, title="Espresso cup", sku="BLUE-CUP")
    page = await use_cases.list_products(uow, limit=10, status=None, page_token="", query="blue")
    assert len(page.products) == 3
    page = await use_cases.list_products(
        uow, limit=10, status=None, page_token="", query="  MUG   blue "
    )
    assert page.products == [mug]
    page = await use_cases.list_products(uow, limit=10, status=None, page_token="", query="cup")
    assert page.products == [cup]
    assert not (
        await use_cases.list_products(uow, limit=10, status=None, page_token="", query="50%")
    ).products


@pytest.mark.parametrize("query", ["x" * 101, "a b c d e f"])
async def test_a_query_too_long_or_of_too_many_words_is_refused(uow, query: str) -> None:
    with pytest.raises(InvalidArgument, match="query"):
        await use_cases.list_products(uow, limit=10, status=None, page_token="", query=query)

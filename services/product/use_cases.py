"""The catalog's application layer: one function per RPC, on the ports declared here.

The gRPC layer hands these plain values (ids parsed, money and statuses converted,
page sizes and batch sizes checked); they apply the catalog's rules and decide what
is read and written, in which unit of work.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from services.product.domain import Product, ProductStatus, new_product, search_words
from shared.errors import InvalidArgument, NotFound
from shared.messaging.unit_of_work import UnitOfWork
from shared.money import Money
from shared.validation import decode_page_token, encode_page_token, parse_uuid

# Where a page starts: after this (created_at, product_id), the catalog's list order.
PageAfter = tuple[datetime, uuid.UUID]


class ProductRepository(Protocol):
    async def add(self, product: Product) -> None:
        """Raises AlreadyExists if another product has this SKU."""

    async def get(self, product_id: uuid.UUID, *, for_update: bool = False) -> Product | None:
        """``for_update``: the row stays locked until the unit of work ends."""

    async def save(self, product: Product) -> None: ...

    async def list_page(
        self,
        *,
        limit: int,
        status: ProductStatus | None,
        after: PageAfter | None,
        words: tuple[str, ...] = (),
    ) -> list[Product]:
        """Up to ``limit`` products in (created_at, product_id) order, after ``after``;
        with ``words``, only those each word is in the title or SKU of
        (``domain.matches``)."""


class ProductReader(Protocol):
    """The read path (GetProduct, BatchGetProducts): may answer from a cache."""

    async def get_many(self, product_ids: list[uuid.UUID]) -> list[Product]:
        """The products that exist, in no particular order."""


class ProductUnitOfWork(UnitOfWork, Protocol):
    @property
    def products(self) -> ProductRepository: ...


UnitOfWorkFactory = Callable[[], ProductUnitOfWork]


@dataclass(frozen=True, slots=True)
class ProductPage:
    products: list[Product]
    next_page_token: str  # empty on the last page


async def create_product(
    unit_of_work: UnitOfWorkFactory,
    *,
    sku: str,
    title: str,
    description: str,
    price: Money,
    status: ProductStatus | None,
) -> Product:
    """A product is sellable (active) unless the admin said otherwise."""
    product = new_product(
        sku=sku,
        title=title,
        description=description,
        price=price,
        status=status or ProductStatus.ACTIVE,
    )
    async with unit_of_work() as uow:
        await uow.products.add(product)
    return product


async def update_product(
    unit_of_work: UnitOfWorkFactory,
    product_id: uuid.UUID,
    *,
    title: str | None,
    description: str | None,
    price: Money | None,
    status: ProductStatus | None,
) -> Product:
    """Changes the fields given (None: keep), under the row's lock."""
    async with unit_of_work() as uow:
        product = await uow.products.get(product_id, for_update=True)
        if product is None:
            raise NotFound(f"product {product_id} does not exist")
        product = product.revise(title=title, description=description, price=price, status=status)
        await uow.products.save(product)
    return product


async def get_product(reads: ProductReader, product_id: uuid.UUID) -> Product:
    found = await reads.get_many([product_id])
    if not found:
        raise NotFound(f"product {product_id} does not exist")
    return found[0]


async def batch_get_products(
    reads: ProductReader, product_ids: Sequence[uuid.UUID]
) -> tuple[list[Product], list[uuid.UUID]]:
    """The products found, and the ids asked for that name none (in the order asked)."""
    ids = list(product_ids)
    products = await reads.get_many(ids)
    found = {p.product_id for p in products}
    return products, [i for i in ids if i not in found]


async def list_products(
    unit_of_work: UnitOfWorkFactory,
    *,
    limit: int,
    status: ProductStatus | None,
    page_token: str,
    query: str = "",
) -> ProductPage:
    """Keyset pages: a product added meanwhile never shifts what the next page holds."""
    after = page_after(page_token)
    words = search_words(query)
    async with unit_of_work() as uow:
        # One extra row tells whether another page exists.
        products = await uow.products.list_page(
            limit=limit + 1, status=status, after=after, words=words
        )
    if len(products) <= limit:
        return ProductPage(products, "")
    products = products[:limit]
    return ProductPage(products, page_token_after(products[-1]))


def page_token_after(last: Product) -> str:
    return encode_page_token({"t": last.created_at.isoformat(), "id": str(last.product_id)})


def page_after(page_token: str) -> PageAfter | None:
    """Where the page of ``page_token`` starts; None for the first page."""
    cursor = decode_page_token(page_token)
    if cursor is None:
        return None
    try:
        moment = datetime.fromisoformat(cursor["t"])
        if moment.tzinfo is None:
            raise ValueError("cursor time must carry its offset")
        # In UTC, as the driver would send it: a time near year 1 or 9999 may not
        # fit (OverflowError), and no token this service issued holds one.
        return moment.astimezone(UTC), parse_uuid(cursor["id"], "page_token")
    except (KeyError, TypeError, ValueError, OverflowError):
        raise InvalidArgument("page_token", "is not a token this service issued") from None

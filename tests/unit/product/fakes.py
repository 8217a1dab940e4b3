"""The product service's ports in memory, with the semantics of its SQL: the unique SKU,
keyset pages in (created_at, product_id) order, and a read path over the same rows."""

from __future__ import annotations

import uuid

from services.product.domain import Product, ProductStatus, matches
from services.product.use_cases import PageAfter
from shared.errors import AlreadyExists
from tests.support.fake_unit_of_work import FakeUnitOfWork


class FakeProductRepository:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Product] = {}
        self.locked: list[uuid.UUID] = []  # the rows read FOR UPDATE, in order

    async def add(self, product: Product) -> None:
        if product.product_id in self.rows or any(p.sku == product.sku for p in self.rows.values()):
            raise AlreadyExists(f"a product with sku {product.sku!r} already exists")
        self.rows[product.product_id] = product

    async def get(self, product_id: uuid.UUID, *, for_update: bool = False) -> Product | None:
        if for_update:
            self.locked.append(product_id)
        return self.rows.get(product_id)

    async def save(self, product: Product) -> None:
        # UPDATE ... WHERE product_id: a row that is gone stays gone.
        if product.product_id in self.rows:
            self.rows[product.product_id] = product

    async def list_page(
        self,
        *,
        limit: int,
        status: ProductStatus | None,
        after: PageAfter | None,
        words: tuple[str, ...] = (),
    ) -> list[Product]:
        rows = sorted(self.rows.values(), key=lambda p: (p.created_at, p.product_id))
        rows = [p for p in rows if matches(p, words)]
        if status is not None:
            rows = [p for p in rows if p.status is status]
        if after is not None:
            rows = [p for p in rows if (p.created_at, p.product_id) > after]
        return rows[:limit]


class FakeProductUnitOfWork(FakeUnitOfWork):
    """Its own factory: ``use_case(uow, ...)`` opens it as the service opens a new one."""

    REPOSITORIES = ("products",)

    def __init__(self) -> None:
        super().__init__()
        self.products = FakeProductRepository()

    def __call__(self) -> FakeProductUnitOfWork:
        return self


class FakeProductReads:
    """The read path over the unit of work's committed rows (no cache)."""

    def __init__(self, uow: FakeProductUnitOfWork) -> None:
        self._uow = uow
        self.reads = 0

    async def get_many(self, product_ids: list[uuid.UUID]) -> list[Product]:
        self.reads += 1
        rows = self._uow.products.rows
        # "WHERE product_id = ANY($1)": each product once, however often it was asked for.
        return [rows[i] for i in dict.fromkeys(product_ids) if i in rows]

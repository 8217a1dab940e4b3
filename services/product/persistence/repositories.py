"""The product repository, the read path and the unit of work over asyncpg."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.product.domain import Product, ProductStatus
from services.product.persistence.catalog_cache import CatalogCache
from services.product.use_cases import PageAfter
from shared.errors import AlreadyExists
from shared.messaging.unit_of_work import PostgresUnitOfWork
from shared.money import Money

_COLUMNS = (
    "product_id, sku, title, description, price_minor, currency, status, created_at, updated_at"
)


def _product(row: asyncpg.Record) -> Product:
    return Product(
        product_id=row["product_id"],
        sku=row["sku"],
        title=row["title"],
        description=row["description"],
        price=Money(row["price_minor"], row["currency"]),
        status=ProductStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PostgresProductRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn
        self.written: set[uuid.UUID] = set()  # what the catalog cache must forget on commit

    async def add(self, product: Product) -> None:
        try:
            await self._conn.execute(
                f"INSERT INTO products ({_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                *_values(product),
            )
            self.written.add(product.product_id)
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a product with sku {product.sku!r} already exists") from None

    async def get(self, product_id: uuid.UUID, *, for_update: bool = False) -> Product | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(
            f"SELECT {_COLUMNS} FROM products WHERE product_id = $1{lock}", product_id
        )
        return _product(row) if row else None

    async def save(self, product: Product) -> None:
        await self._conn.execute(
            "UPDATE products SET title=$2, description=$3, price_minor=$4, currency=$5,"
            " status=$6, updated_at=$7 WHERE product_id=$1",
            product.product_id,
            product.title,
            product.description,
            product.price.amount_minor,
            product.price.currency,
            product.status.value,
            product.updated_at,
        )
        self.written.add(product.product_id)

    async def list_page(
        self,
        *,
        limit: int,
        status: ProductStatus | None,
        after: PageAfter | None,
        words: tuple[str, ...] = (),
    ) -> list[Product]:
        """Keyset pagination in (created_at, product_id) order: stable under inserts."""
        where, args = [], list[Any]()
        for word in words:
            args.append(f"%{_like_escaped(word)}%")
            where.append(f"(title ILIKE ${len(args)} OR sku ILIKE ${len(args)})")
        if status is not None:
            args.append(status.value)
            where.append(f"status = ${len(args)}")
        if after is not None:
            args.extend(after)
            where.append(f"(created_at, product_id) > (${len(args) - 1}, ${len(args)})")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        args.append(limit)
        rows = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM products {clause}"
            f" ORDER BY created_at, product_id LIMIT ${len(args)}",
            *args,
        )
        return [_product(r) for r in rows]


def _like_escaped(word: str) -> str:
    """A word that LIKE matches literally: its own % _ and \\ are not wildcards."""
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _values(p: Product) -> tuple[Any, ...]:
    return (
        p.product_id,
        p.sku,
        p.title,
        p.description,
        p.price.amount_minor,
        p.price.currency,
        p.status.value,
        p.created_at,
        p.updated_at,
    )


class ProductReads:
    """The read path: from the catalog cache when it holds the product, else one
    statement outside any transaction (a single SELECT needs none: no BEGIN and COMMIT
    round trips), whose result fills the cache."""

    def __init__(self, pool: asyncpg.Pool, cache: CatalogCache | None) -> None:
        self._pool = pool
        self._cache = cache

    async def get(self, product_id: uuid.UUID) -> Product | None:
        found = await self.get_many([product_id])
        return found[0] if found else None

    async def get_many(self, product_ids: list[uuid.UUID]) -> list[Product]:
        """The products that exist, in no particular order."""
        cache = self._cache
        if cache is None:
            return await self._select(product_ids)
        hits: list[Product] = []
        wanted: list[uuid.UUID] = []
        for product_id in product_ids:
            cached = cache.get(product_id)
            if cached is None:
                wanted.append(product_id)
            else:
                hits.append(cached)
        if not wanted:
            return hits
        ticket = cache.ticket()  # before the read: see catalog_cache's module doc
        loaded = await self._select(wanted)
        for product in loaded:
            cache.fill(product, ticket)
        return hits + loaded

    async def _select(self, product_ids: list[uuid.UUID]) -> list[Product]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM products WHERE product_id = ANY($1::uuid[])", product_ids
        )
        return [_product(r) for r in rows]


class PostgresProductUnitOfWork(PostgresUnitOfWork):
    products: PostgresProductRepository

    def __init__(self, pool: asyncpg.Pool, cache: CatalogCache | None = None) -> None:
        super().__init__(pool)
        self._cache = cache

    def bind(self, connection: PoolConnectionProxy) -> None:
        self.products = PostgresProductRepository(connection)

    def committed(self) -> None:
        # This instance's caller reads its own write here at once; the other instances
        # hear of it through the trigger's notification.
        if self._cache is not None:
            for product_id in self.products.written:
                self._cache.invalidate(product_id)


def unit_of_work_factory(
    pool: asyncpg.Pool, cache: CatalogCache | None = None
) -> Callable[[], PostgresProductUnitOfWork]:
    return lambda: PostgresProductUnitOfWork(pool, cache)

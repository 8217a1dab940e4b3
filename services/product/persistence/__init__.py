"""The catalog on asyncpg: the repositories and unit of work, and the read path's
in-memory catalog that sits in front of them (catalog_cache.py)."""

from services.product.persistence.catalog_cache import CatalogCache, catalog_listener
from services.product.persistence.repositories import (
    PostgresProductRepository,
    PostgresProductUnitOfWork,
    ProductReads,
    unit_of_work_factory,
)

__all__ = [
    "CatalogCache",
    "PostgresProductRepository",
    "PostgresProductUnitOfWork",
    "ProductReads",
    "catalog_listener",
    "unit_of_work_factory",
]

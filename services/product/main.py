"""Entry point: ``python -m services.product.main [serve|migrate]``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from services.product.grpc_api import ACCESS, ProductServicer
from services.product.persistence import ProductReads, unit_of_work_factory
from services.product.persistence.catalog_cache import CatalogCache, catalog_listener
from services.product.settings import ProductSettings
from shared.config.center import ConfigCenter
from shared.db.pool import service_pool
from shared.rpc.server import ServiceBinding
from shared.service import ServiceDefinition
from shop.product.v1 import product_pb2_grpc


@asynccontextmanager
async def bindings(
    settings: ProductSettings, config: ConfigCenter
) -> AsyncIterator[list[ServiceBinding]]:
    async with AsyncExitStack() as resources:
        pool = await resources.enter_async_context(service_pool(settings))
        cache = None
        if settings.catalog_cache_entries:
            cache = CatalogCache(
                settings.catalog_cache_entries, settings.catalog_cache_max_age_seconds
            )
            resources.callback(cache.go_dark)
            listener = catalog_listener(settings.pg_dsn, cache)
            listener.start()  # the cache serves nothing until it listens
            resources.push_async_callback(listener.stop)
        yield [
            ServiceBinding(
                "shop.product.v1.ProductService",
                product_pb2_grpc.add_ProductServiceServicer_to_server,
                ProductServicer(unit_of_work_factory(pool, cache), ProductReads(pool, cache)),
            )
        ]


SERVICE = ServiceDefinition(
    settings_type=ProductSettings,
    migrations=Path(__file__).parent / "migrations",
    access=ACCESS,
    bindings=bindings,
)

if __name__ == "__main__":
    SERVICE.cli()

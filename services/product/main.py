"""Entry point: ``python -m services.product.main [serve|migrate]``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from services.product.grpc_handlers import ACCESS, ProductServicer, unit_of_work_factory
from services.product.settings import ProductSettings
from shared.db.pool import create_pool
from shared.rpc.server import ServiceBinding
from shared.service import ServiceDefinition
from shop.product.v1 import product_pb2_grpc


@asynccontextmanager
async def bindings(settings: ProductSettings) -> AsyncIterator[list[ServiceBinding]]:
    pool = await create_pool(
        settings.pg_dsn, min_size=settings.pg_pool_min_size, max_size=settings.pg_pool_max_size
    )
    try:
        yield [
            ServiceBinding(
                "shop.product.v1.ProductService",
                product_pb2_grpc.add_ProductServiceServicer_to_server,
                ProductServicer(unit_of_work_factory(pool)),
            )
        ]
    finally:
        await pool.close()


SERVICE = ServiceDefinition(
    settings_type=ProductSettings,
    migrations=Path(__file__).parent / "migrations",
    access=ACCESS,
    bindings=bindings,
)

if __name__ == "__main__":
    SERVICE.cli()

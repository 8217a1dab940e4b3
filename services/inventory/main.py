"""Entry point: ``python -m services.inventory.main [serve|migrate]``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from services.inventory.grpc_api import ACCESS, InventoryServicer
from services.inventory.persistence import PostgresInventoryUnitOfWork, unit_of_work_factory
from services.inventory.settings import InventorySettings
from services.inventory.subscriptions import SUBSCRIPTIONS
from shared.config.center import ConfigCenter
from shared.db.pool import service_pool
from shared.messaging.runtime import run_messaging
from shared.messaging.subscriptions import Subscriptions
from shared.rpc.server import ServiceBinding
from shared.service import ServiceDefinition
from shop.inventory.v1 import inventory_pb2_grpc


@asynccontextmanager
async def bindings(
    settings: InventorySettings, config: ConfigCenter
) -> AsyncIterator[list[ServiceBinding]]:
    async with AsyncExitStack() as resources:
        pool = await resources.enter_async_context(service_pool(settings))
        unit_of_work = unit_of_work_factory(pool)
        # The use cases' subscriptions, served by the PostgreSQL unit of work.
        saga: Subscriptions[PostgresInventoryUnitOfWork] = SUBSCRIPTIONS
        await resources.enter_async_context(run_messaging(settings, pool, unit_of_work, saga))
        yield [
            ServiceBinding(
                "shop.inventory.v1.InventoryService",
                inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
                InventoryServicer(unit_of_work),
            )
        ]


SERVICE = ServiceDefinition(
    settings_type=InventorySettings,
    migrations=Path(__file__).parent / "migrations",
    access=ACCESS,
    bindings=bindings,
)

if __name__ == "__main__":
    SERVICE.cli()

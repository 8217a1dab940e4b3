"""Entry point: ``python -m services.inventory.main [serve|migrate]``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from services.inventory.event_handlers import SUBSCRIPTIONS
from services.inventory.grpc_handlers import ACCESS, InventoryServicer, unit_of_work_factory
from services.inventory.settings import InventorySettings
from shared.config.center import ConfigCenter
from shared.db.pool import service_pool
from shared.messaging.runtime import run_messaging
from shared.rpc.server import ServiceBinding
from shared.service import ServiceDefinition
from shop.inventory.v1 import inventory_pb2_grpc


@asynccontextmanager
async def bindings(
    settings: InventorySettings, config: ConfigCenter
) -> AsyncIterator[list[ServiceBinding]]:
    async with service_pool(settings) as pool:
        uow_factory = unit_of_work_factory(pool)
        async with run_messaging(settings, pool, uow_factory, SUBSCRIPTIONS):
            yield [
                ServiceBinding(
                    "shop.inventory.v1.InventoryService",
                    inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
                    InventoryServicer(uow_factory),
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

"""Entry point: ``python -m services.order.main [serve|migrate]``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import cast

from services.order.adapters.catalog import ProductCatalog
from services.order.adapters.saga_timeout import KafkaLink, SagaTimeout
from services.order.adapters.watch_hub import OrderStatusHub
from services.order.grpc_api import ACCESS, OrderServicer
from services.order.knobs import OrderKnobs
from services.order.persistence import PostgresOrderUnitOfWork, unit_of_work_factory
from services.order.settings import OrderSettings
from services.order.subscriptions import SUBSCRIPTIONS
from shared.config.center import ConfigCenter
from shared.db.pool import service_pool
from shared.messaging.runtime import run_messaging
from shared.messaging.subscriptions import Subscriptions
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import service_etcd_client
from shared.rpc.client import ServiceClients
from shared.rpc.server import ServiceBinding
from shared.service import ServiceDefinition
from shared.tls import ClientTLS
from shop.order.v1 import order_pb2_grpc

log = logging.getLogger(__name__)
# How long start-up waits for etcd's first listing of the peers.
DIRECTORY_SYNC_SECONDS = 5.0


@asynccontextmanager
async def bindings(
    settings: OrderSettings, config: ConfigCenter
) -> AsyncIterator[list[ServiceBinding]]:
    async with AsyncExitStack() as resources:
        pool = await resources.enter_async_context(service_pool(settings))
        etcd = service_etcd_client(settings)
        resources.push_async_callback(etcd.close)
        directory = ServiceDirectory(etcd)
        resources.push_async_callback(directory.stop)
        # The directory retries an unreachable etcd forever. Without it there is no peer
        # to call yet, but orders can be read and followed: serve, and let the directory
        # fill when etcd answers (a restarted instance must not wait on an etcd restart).
        try:
            await asyncio.wait_for(directory.start(), DIRECTORY_SYNC_SECONDS)
        except TimeoutError:
            log.warning("etcd not listed in %ss; starting without peers", DIRECTORY_SYNC_SECONDS)
        # Order calls product as itself: its own certificate is its identity.
        # Its breakers, retries and deadline margin follow this service's config center.
        clients = ServiceClients(
            directory, ClientTLS(settings.tls_dir, settings.service_name), config=config
        )
        resources.push_async_callback(clients.close)

        def knobs() -> OrderKnobs:
            return cast(OrderKnobs, config.current.service)

        catalog = ProductCatalog(
            clients,
            deadline_seconds=lambda: knobs().product_deadline_seconds,
            # Degraded mode while product is unreachable: /config/order's "degradation".
            degradation=lambda: knobs().degradation,
        )
        uow_factory = unit_of_work_factory(pool)
        hub = OrderStatusHub(settings.pg_dsn)
        await hub.start()
        resources.push_async_callback(hub.close)
        # Started before messaging, so the wall-clock ceiling holds from the start; the
        # saga clock runs once the consumer below has joined (see saga_timeout.py).
        link = KafkaLink()
        timeout = SagaTimeout(
            uow_factory,
            timeout_seconds=lambda: knobs().saga_timeout_seconds,
            ceiling_seconds=lambda: knobs().saga_timeout_ceiling_seconds,
            link_healthy=link.healthy,
            batch_size=settings.saga_timeout_batch_size,
        )
        await timeout.start()
        resources.push_async_callback(timeout.stop)
        # The use cases' subscriptions, served by the PostgreSQL unit of work.
        saga: Subscriptions[PostgresOrderUnitOfWork] = SUBSCRIPTIONS
        messaging = await resources.enter_async_context(
            run_messaging(settings, pool, uow_factory, saga)
        )
        link.consumer = messaging.consumer
        yield [
            ServiceBinding(
                "shop.order.v1.OrderService",
                order_pb2_grpc.add_OrderServiceServicer_to_server,
                OrderServicer(uow_factory, catalog, hub),
                # Before the server drains: open watches end now (UNAVAILABLE, reconnect)
                # instead of holding the graceful stop for its whole grace period.
                on_shutdown=[hub.close],
            )
        ]


SERVICE = ServiceDefinition(
    settings_type=OrderSettings,
    migrations=Path(__file__).parent / "migrations",
    access=ACCESS,
    bindings=bindings,
    knobs=OrderKnobs,
)

if __name__ == "__main__":
    SERVICE.cli()

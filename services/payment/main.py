"""Entry point: ``python -m services.payment.main [serve|migrate]``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from services.payment.adapters.authorizer import ProviderAuthorizer
from services.payment.adapters.provider import PaymentProviderSimulator
from services.payment.grpc_api import ACCESS, PaymentServicer
from services.payment.knobs import PaymentKnobs
from services.payment.persistence import PostgresPaymentUnitOfWork, unit_of_work_factory
from services.payment.settings import PaymentSettings
from services.payment.subscriptions import subscriptions
from shared.config.center import ConfigCenter
from shared.db.pool import service_pool
from shared.messaging.runtime import run_messaging
from shared.messaging.subscriptions import Subscriptions
from shared.rpc.server import ServiceBinding
from shared.service import ServiceDefinition
from shop.payment.v1 import payment_pb2_grpc


@asynccontextmanager
async def bindings(
    settings: PaymentSettings, config: ConfigCenter
) -> AsyncIterator[list[ServiceBinding]]:
    async with AsyncExitStack() as resources:
        pool = await resources.enter_async_context(service_pool(settings))
        units = unit_of_work_factory(pool)
        # The provider follows the config center's knobs while the service runs.
        provider = PaymentProviderSimulator.from_settings(settings)
        config.listeners.append(provider.follow)
        resources.callback(config.listeners.remove, provider.follow)
        provider.follow(config.current)
        authorizer = ProviderAuthorizer(
            provider,
            concurrency=settings.provider_concurrency,
            timeout=settings.provider_timeout_ms / 1000,
            attempts=settings.provider_attempts,
        )
        # The use cases' subscriptions, served by the PostgreSQL unit of work.
        saga: Subscriptions[PostgresPaymentUnitOfWork] = subscriptions(authorizer)
        await resources.enter_async_context(run_messaging(settings, pool, units, saga))
        yield [
            ServiceBinding(
                "shop.payment.v1.PaymentService",
                payment_pb2_grpc.add_PaymentServiceServicer_to_server,
                PaymentServicer(units, settings.currency),
            )
        ]


SERVICE = ServiceDefinition(
    settings_type=PaymentSettings,
    migrations=Path(__file__).parent / "migrations",
    access=ACCESS,
    bindings=bindings,
    knobs=PaymentKnobs,
)

if __name__ == "__main__":
    SERVICE.cli()

"""Entry point: ``python -m services.payment.main [serve|migrate]``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from services.payment.authorizer import ProviderAuthorizer
from services.payment.event_handlers import subscriptions
from services.payment.grpc_handlers import ACCESS, PaymentServicer, unit_of_work_factory
from services.payment.knobs import PaymentKnobs
from services.payment.provider import PaymentProviderSimulator
from services.payment.settings import PaymentSettings
from shared.config.center import ConfigCenter
from shared.db.pool import service_pool
from shared.messaging.runtime import run_messaging
from shared.rpc.server import ServiceBinding
from shared.service import ServiceDefinition
from shop.payment.v1 import payment_pb2_grpc


@asynccontextmanager
async def bindings(
    settings: PaymentSettings, config: ConfigCenter
) -> AsyncIterator[list[ServiceBinding]]:
    async with service_pool(settings) as pool:
        uow_factory = unit_of_work_factory(pool)
        provider = PaymentProviderSimulator.from_settings(settings)
        config.listeners.append(provider.follow)
        provider.follow(config.current)
        authorizer = ProviderAuthorizer(
            provider,
            concurrency=settings.provider_concurrency,
            timeout=settings.provider_timeout_ms / 1000,
            attempts=settings.provider_attempts,
        )
        saga = subscriptions(authorizer)
        async with run_messaging(settings, pool, uow_factory, saga):
            yield [
                ServiceBinding(
                    "shop.payment.v1.PaymentService",
                    payment_pb2_grpc.add_PaymentServiceServicer_to_server,
                    PaymentServicer(uow_factory, settings.currency),
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

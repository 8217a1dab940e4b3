"""Entry point: ``python -m services.user.main [serve|migrate]``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path

from services.user.adapters.keyring import SigningKeyring
from services.user.adapters.oauth.server import authorization_server
from services.user.domain import Passwords, SigningKeyPolicy
from services.user.grpc_api import ACCESS, UserServicer
from services.user.persistence import unit_of_work_factory
from services.user.settings import UserSettings
from shared.config.center import ConfigCenter
from shared.db.pool import service_pool
from shared.registry.etcd import service_etcd_client
from shared.rpc.server import ServiceBinding
from shared.service import ServiceDefinition
from shop.user.v1 import user_pb2_grpc


def signing_key_policy(settings: UserSettings) -> SigningKeyPolicy:
    return SigningKeyPolicy(
        token_ttl=timedelta(seconds=settings.token_ttl_seconds),
        leeway=timedelta(seconds=settings.signing_key_leeway_seconds),
    )


@asynccontextmanager
async def bindings(
    settings: UserSettings, config: ConfigCenter
) -> AsyncIterator[list[ServiceBinding]]:
    # Passwords hashes its decoy on creation: keep that off the event loop too.
    passwords = await asyncio.to_thread(Passwords)
    async with AsyncExitStack() as resources:
        pool = await resources.enter_async_context(service_pool(settings))
        etcd = service_etcd_client(settings)
        resources.push_async_callback(etcd.close)
        uow_factory = unit_of_work_factory(pool)
        keyring = SigningKeyring(
            uow_factory,
            etcd,
            signing_key_policy(settings),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            bootstrap_key_file=settings.jwt_private_key_file,
        )
        await keyring.start()
        resources.push_async_callback(keyring.stop)
        # The OAuth2 / OpenID Connect server: HTTPS beside gRPC, registered with the instance.
        http_address = await resources.enter_async_context(
            authorization_server(settings, uow_factory, keyring, passwords, etcd, pool)
        )
        yield [
            ServiceBinding(
                "shop.user.v1.UserService",
                user_pb2_grpc.add_UserServiceServicer_to_server,
                UserServicer(uow_factory, keyring, passwords),
                http_address=http_address,
            )
        ]


SERVICE = ServiceDefinition(
    settings_type=UserSettings,
    migrations=Path(__file__).parent / "migrations",
    access=ACCESS,
    bindings=bindings,
)

if __name__ == "__main__":
    SERVICE.cli()

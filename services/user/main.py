"""Entry point: ``python -m services.user.main [serve|migrate]``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from services.user.domain import Passwords
from services.user.grpc_handlers import ACCESS, UserServicer, unit_of_work_factory
from services.user.settings import UserSettings
from shared.auth.keys import key_id, load_private_key, load_public_key
from shared.auth.tokens import TokenIssuer
from shared.db.pool import service_pool
from shared.rpc.server import ServiceBinding
from shared.service import ServiceDefinition
from shop.user.v1 import user_pb2_grpc


def token_issuer(settings: UserSettings) -> TokenIssuer:
    """The signer; refuses to start if its key is not the pair of the verifying key,
    since every token it issued would then be rejected, this service's included."""
    private_key = load_private_key(settings.jwt_private_key_file)
    public_key = load_public_key(settings.jwt_public_key_file)
    if not isinstance(private_key, RSAPrivateKey):
        raise ValueError(f"{settings.jwt_private_key_file} must hold an RSA key (RS256)")
    if key_id(private_key.public_key()) != key_id(public_key):
        raise ValueError(
            f"{settings.jwt_private_key_file} is not the private half of"
            f" {settings.jwt_public_key_file}"
        )
    return TokenIssuer(
        private_key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl=timedelta(seconds=settings.token_ttl_seconds),
    )


@asynccontextmanager
async def bindings(settings: UserSettings) -> AsyncIterator[list[ServiceBinding]]:
    issuer = token_issuer(settings)
    # Passwords hashes its decoy on creation: keep that off the event loop too.
    passwords = await asyncio.to_thread(Passwords)
    async with service_pool(settings) as pool:
        yield [
            ServiceBinding(
                "shop.user.v1.UserService",
                user_pb2_grpc.add_UserServiceServicer_to_server,
                UserServicer(unit_of_work_factory(pool), issuer, passwords),
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

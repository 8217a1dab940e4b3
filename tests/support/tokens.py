"""Tokens for tests, signed by a key pair made for the test session."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from shared.auth.identity import Role
from shared.auth.jwks import publish_jwks
from shared.auth.keys import generate_keypair, key_id, load_private_key
from shared.auth.tokens import TokenIssuer
from shared.registry.etcd import etcd_client
from shared.settings import DEFAULT_ISSUER
from shared.tls import ClientTLS

ISSUER = DEFAULT_ISSUER
AUDIENCE = "shop"


@dataclass
class TestKeys:
    __test__ = False  # a helper, not a test class

    directory: Path
    # The tokens' issuer: the default, which the services verify, unless the system runs a
    # gateway on a port of its own (the storefront's origin is then the issuer).
    issuer_url: str = ISSUER

    @property
    def public_key_file(self) -> Path:
        return self.directory / "public.pem"

    @property
    def private_key_file(self) -> Path:
        return self.directory / "private.pem"

    @property
    def public_key(self) -> RSAPublicKey:
        key = load_private_key(self.private_key_file)
        assert isinstance(key, RSAPrivateKey)
        return key.public_key()

    @property
    def kid(self) -> str:
        return key_id(self.public_key)

    async def publish(self, etcd_endpoint: str, tls_dir: Path) -> None:
        """Makes the test key the whole JWKS in etcd, as the user service would publish it
        (and with its certificate, the only one etcd lets write the JWKS): for services
        started without a user service, so minted tokens verify."""
        client = etcd_client(etcd_endpoint, tls=ClientTLS(tls_dir, "user"))
        try:
            await publish_jwks(client, [self.public_key])
        finally:
            await client.close()

    def issuer(self, ttl: timedelta = timedelta(minutes=30)) -> TokenIssuer:
        return TokenIssuer(load_private_key(self.private_key_file), self.issuer_url, AUDIENCE, ttl)

    def token(
        self,
        role: Role = Role.CUSTOMER,
        user_id: uuid.UUID | None = None,
        ttl: timedelta = timedelta(minutes=30),
    ) -> str:
        return self.issuer(ttl).issue(user_id or uuid.uuid4(), role)[0]

    def expired_token(self, role: Role = Role.ADMIN) -> str:
        return self.token(role, ttl=timedelta(seconds=-60))


def make_keys(directory: Path) -> TestKeys:
    generate_keypair(directory)
    return TestKeys(directory)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)

"""Tokens for tests, signed by a key pair made for the test session."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from shared.auth.identity import Role
from shared.auth.keys import generate_keypair, load_private_key
from shared.auth.tokens import TokenIssuer

ISSUER = "shop-user"
AUDIENCE = "shop"


@dataclass
class TestKeys:
    __test__ = False  # a helper, not a test class

    directory: Path

    @property
    def public_key_file(self) -> Path:
        return self.directory / "public.pem"

    @property
    def private_key_file(self) -> Path:
        return self.directory / "private.pem"

    def issuer(self, ttl: timedelta = timedelta(minutes=30)) -> TokenIssuer:
        return TokenIssuer(load_private_key(self.private_key_file), ISSUER, AUDIENCE, ttl)

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

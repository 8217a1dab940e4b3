"""Issuing (user service) and verifying (every service) RS256 access tokens."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from shared.auth.identity import Identity, Role
from shared.auth.keys import key_id
from shared.errors import Unauthenticated

ALGORITHM = "RS256"


@dataclass(frozen=True)
class TokenIssuer:
    private_key: PrivateKeyTypes
    issuer: str
    audience: str
    ttl: timedelta

    def issue(self, user_id: uuid.UUID, role: Role) -> tuple[str, datetime]:
        if not isinstance(self.private_key, RSAPrivateKey):
            raise TypeError("tokens are signed with an RSA key")
        now = datetime.now(UTC)
        expires_at = now + self.ttl
        claims = {
            "sub": str(user_id),
            "role": role.value,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        kid = key_id(self.private_key.public_key())
        token = jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": kid})
        return token, expires_at


class TokenVerifier:
    """Checks signature, kid, issuer, audience and expiry; caches good tokens.

    The cache matters: an RSA verify costs more than the rest of a cheap RPC,
    and a client sends the same token on every call until it expires.
    """

    def __init__(
        self, public_keys: list[PublicKeyTypes], issuer: str, audience: str, cache_size: int = 4096
    ) -> None:
        self._keys: dict[str, RSAPublicKey] = {}
        for key in public_keys:
            if not isinstance(key, RSAPublicKey):
                raise TypeError("tokens are verified with RSA public keys")
            self._keys[key_id(key)] = key
        self._issuer = issuer
        self._audience = audience
        self._cache: dict[str, tuple[Identity, float]] = {}
        self._cache_size = cache_size

    def verify(self, token: str) -> Identity:
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        identity, expires = self._verify_uncached(token)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[token] = (identity, expires)
        return identity

    def _verify_uncached(self, token: str) -> tuple[Identity, float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed token") from None
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["sub", "role", "exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        try:
            identity = Identity(user_id=uuid.UUID(claims["sub"]), role=Role(claims["role"]))
        except ValueError:
            raise Unauthenticated("token carries an unknown subject or role") from None
        return identity, float(claims["exp"])

"""Issuing (user service) and verifying (every service) RS256 access tokens."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from shared.auth.identity import Identity, Role
from shared.auth.keys import key_id
from shared.auth.scopes import format_scope, parse_scope, scopes_for
from shared.errors import Unauthenticated

ALGORITHM = "RS256"
# The client of tokens that the user service's Login RPC issues (first-party tools).
LOGIN_CLIENT = "shop-login"


@dataclass(frozen=True)
class TokenIssuer:
    private_key: PrivateKeyTypes
    issuer: str
    audience: str
    ttl: timedelta

    def issue(
        self,
        user_id: uuid.UUID,
        role: Role,
        *,
        scopes: Iterable[str] | None = None,
        client_id: str = LOGIN_CLIENT,
        ttl: timedelta | None = None,
    ) -> tuple[str, datetime]:
        """``scopes``: None grants everything the role allows (a Login token)."""
        if not isinstance(self.private_key, RSAPrivateKey):
            raise TypeError("tokens are signed with an RSA key")
        now = datetime.now(UTC)
        expires_at = now + (self.ttl if ttl is None else min(ttl, self.ttl))
        claims = {
            "sub": str(user_id),
            "role": role.value,
            "scope": format_scope(scopes_for(role) if scopes is None else scopes),
            "client_id": client_id,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        kid = key_id(self.private_key.public_key())
        token = jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": kid})
        return token, expires_at


class TokenSigner(Protocol):
    """What issues tokens: a TokenIssuer, or the user service's rotating keyring."""

    def issue(
        self,
        user_id: uuid.UUID,
        role: Role,
        *,
        scopes: Iterable[str] | None = None,
        client_id: str = LOGIN_CLIENT,
        ttl: timedelta | None = None,
    ) -> tuple[str, datetime]: ...


class TokenVerifier:
    """Checks signature, kid, issuer, audience and expiry; caches good tokens.

    The cache matters: an RSA verify costs more than the rest of a cheap RPC,
    and a client sends the same token on every call until it expires. The key
    set changes as keys rotate (``replace_keys``, fed by the JWKS watch); a
    cached token counts only while its kid is still in the set, so a removed
    key's tokens stop verifying at once, cached or not.
    """

    def __init__(
        self,
        public_keys: Iterable[PublicKeyTypes],
        issuer: str,
        audience: str,
        cache_size: int = 4096,
    ) -> None:
        self._keys: dict[str, RSAPublicKey] = {}
        self.replace_keys({key_id(key): key for key in map(_rsa, public_keys)})
        self._issuer = issuer
        self._audience = audience
        self._cache: dict[str, tuple[Identity, float, str]] = {}
        self._cache_size = cache_size

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def replace_keys(self, keys: Mapping[str, RSAPublicKey]) -> None:
        """The whole current set, kid -> key (the JWKS document's content)."""
        self._keys = {kid: _rsa(key) for kid, key in keys.items()}

    def verify(self, token: str) -> Identity:
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time() and cached[2] in self._keys:
            return cached[0]
        identity, expires, kid = self._verify_uncached(token)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[token] = (identity, expires, kid)
        return identity

    def _verify_uncached(self, token: str) -> tuple[Identity, float, str]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed token") from None
        if not isinstance(kid, str) or (key := self._keys.get(kid)) is None:
            raise Unauthenticated("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["sub", "role", "scope", "exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        scope, client_id = claims["scope"], claims.get("client_id", "")
        if not isinstance(scope, str) or not isinstance(client_id, str):
            raise Unauthenticated("token carries a malformed scope or client") from None
        try:
            identity = Identity(
                user_id=uuid.UUID(claims["sub"]),
                role=Role(claims["role"]),
                scopes=parse_scope(scope),
                client_id=client_id,
            )
        except ValueError:
            raise Unauthenticated("token carries an unknown subject or role") from None
        return identity, float(claims["exp"]), kid


def _rsa(key: PublicKeyTypes) -> RSAPublicKey:
    if not isinstance(key, RSAPublicKey):
        raise TypeError("tokens are verified with RSA public keys")
    return key

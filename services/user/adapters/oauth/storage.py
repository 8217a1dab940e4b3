"""aioauth's storage over the user service's unit of work, and what the grants need beside it.

aioauth asks its storage for clients (with the secret it was shown), codes and tokens. The
state changes themselves (a code redeemed once, a refresh token rotated) are not left to
aioauth's generic create/delete calls: the grant types of grants.py call issuing.py for them,
each in one transaction. What aioauth keeps: parsing and client authentication, the grant
and scope checks against the client, PKCE's comparison, and the RFC's error responses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aioauth.models import AuthorizationCode as AioauthCode
from aioauth.models import Client, Token
from aioauth.requests import Request as OAuthRequest
from aioauth.storage import BaseStorage
from aioauth.types import TokenType

from services.user import use_cases
from services.user.adapters.oauth import issuing
from services.user.domain import OAuthClient
from services.user.ports import SigningKeys, UnitOfWorkFactory
from shared.auth.scopes import format_scope
from shared.auth.tokens import TokenVerifier
from shared.errors import Unauthenticated

# Where a request carries the client that aioauth authenticated (the domain's, with rules).
CLIENT = "shop.client"
# Set by the authorize endpoint once a person is signed in: (User, auth_time).
SIGNED_IN = "shop.signed_in"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def domain_client(request: OAuthRequest) -> OAuthClient:
    client = request.extra.get(CLIENT)
    if not isinstance(client, OAuthClient):
        raise RuntimeError("the client was not looked up for this request")
    return client


def aioauth_client(client: OAuthClient) -> Client:
    """aioauth's view: its checks of grant type, response type, redirect URI and scope."""
    return Client(
        client_id=client.client_id,
        client_secret="",  # never handed to aioauth: OAuthClient.authenticates compares hashes
        grant_types=sorted(client.grant_types),  # type: ignore[arg-type]
        response_types=["code"] if "authorization_code" in client.grant_types else [],
        redirect_uris=list(client.redirect_uris),
        scope=format_scope(client.scopes),
    )


@dataclass
class OAuthStorage(BaseStorage):
    unit_of_work: UnitOfWorkFactory
    keys: SigningKeys
    verifier: TokenVerifier
    lifetimes: issuing.Lifetimes
    issuer: str
    clock: Callable[[], datetime] = field(default=_utc_now)

    async def get_client(
        self, *, request: OAuthRequest, client_id: str, client_secret: str | None = None
    ) -> Client | None:
        """``client_secret`` None: no authentication asked (the authorize endpoint); "" is
        a public client's (or a confidential client that sent none, which fails)."""
        client = await use_cases.get_client(self.unit_of_work, client_id) if client_id else None
        if client is None:
            return None
        if client_secret is not None and not client.authenticates(client_secret):
            return None
        request.extra[CLIENT] = client
        return aioauth_client(client)

    async def get_authorization_code(
        self, *, request: OAuthRequest, client_id: str, code: str
    ) -> AioauthCode | None:
        stored = await issuing.find_code(self.unit_of_work, client_id, code)
        if stored is None:
            return None
        now = time.time()
        return AioauthCode(
            code=code,
            client_id=stored.client_id,
            redirect_uri=stored.redirect_uri,
            response_type="code",
            scope=format_scope(stored.scopes),
            # aioauth's expiry test is auth_time + expires_in < now: expires_at < now.
            auth_time=int(now),
            expires_in=int(stored.expires_at.timestamp() - now),
            code_challenge=stored.code_challenge,
            code_challenge_method="S256",
            nonce=stored.nonce,
        )

    # --- revocation (RFC 7009): aioauth looks a token up, then asks for it to be revoked --------

    def _jti(self, access_token: str | None) -> str | None:
        """An access token's id, if it is one this server signed and it still verifies."""
        if not access_token:
            return None
        try:
            self.verifier.verify(access_token)
        except Unauthenticated:
            return None
        return issuing.jti_of(access_token)

    async def get_token(
        self,
        *,
        request: OAuthRequest,
        client_id: str,
        token_type: TokenType | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
    ) -> Token | None:
        """For a revocation: the refresh token named (or issued with the access token named)."""
        token = refresh_token or access_token or ""
        jti = self._jti(access_token)
        found = await issuing.revocable(
            self.unit_of_work, domain_client(request), token=token, jti=jti
        )
        if found is None:
            return None
        return Token(
            access_token="",  # never read back: only the refresh token's hash is stored
            refresh_token=refresh_token,
            scope=format_scope(found.scopes),
            issued_at=int(time.time()),
            expires_in=0,
            refresh_token_expires_in=int(found.expires_at.timestamp() - time.time()),
            client_id=found.client_id,
            revoked=found.revoked_at is not None,
        )

    async def revoke_token(
        self,
        *,
        request: OAuthRequest,
        client_id: str,
        refresh_token: str | None = None,
        token_type: TokenType | None = None,
        access_token: str | None = None,
    ) -> None:
        token = refresh_token or access_token or ""
        await issuing.revoke(
            self.unit_of_work,
            domain_client(request),
            token=token,
            jti=self._jti(access_token),
            now=self.clock(),
        )

    async def create_token(self, **kwargs: Any) -> Token:
        raise NotImplementedError("tokens are made by grants.py's grant types")

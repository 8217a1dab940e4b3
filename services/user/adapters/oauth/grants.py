"""aioauth's response and grant types, tightened where OAuth 2.1 and RFC 9700 ask more than
aioauth does, and bound to issuing.py for the tokens.

- authorize: ``response_type=code`` only; ``state`` required; PKCE required for every client,
  with ``S256`` only (aioauth accepts ``plain`` and no PKCE at all); a scope required.
- authorization_code: a ``code_verifier`` that fails is ``invalid_grant`` (RFC 7636 §4.6;
  aioauth says ``mismatching_state``), the redirect URI must be the code's own, the code is
  redeemed once (issuing.redeem_code).
- refresh_token: rotation with reuse detection (issuing.refresh).
- client_credentials: only for clients registered for it (aioauth's check), no refresh token.
No password grant, no implicit: the server is built with these types alone.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aioauth.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    MismatchingStateError,
    OAuth2Error,
    TemporarilyUnavailableError,
)
from aioauth.grant_type import (
    AuthorizationCodeGrantType,
    ClientCredentialsGrantType,
    RefreshTokenGrantType,
)
from aioauth.models import Client
from aioauth.oidc.core.responses import TokenResponse
from aioauth.requests import Request as OAuthRequest
from aioauth.response_type import ResponseTypeAuthorizationCode
from aioauth.responses import AuthorizationCodeResponse
from aioauth.server import AuthorizationServer

from services.user.adapters.oauth import issuing
from services.user.adapters.oauth.storage import (
    SIGNED_IN,
    OAuthStorage,
    domain_client,
)
from shared.auth.scopes import format_scope, parse_scope
from shared.errors import InvalidArgument, Unavailable

T = TypeVar("T")
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url(SHA-256(verifier)), unpadded


async def _as_oauth_errors(request: OAuthRequest, step: Callable[[], Awaitable[T]]) -> T:
    """The use cases' errors in the RFC's words."""
    try:
        return await step()
    except issuing.InvalidGrant as error:
        raise InvalidGrantError(request, description=error.message) from None
    except InvalidArgument as error:
        if error.field == "scope":
            raise InvalidScopeError(request, description=error.message) from None
        raise InvalidRequestError(request, description=error.message) from None
    except Unavailable as error:
        raise TemporarilyUnavailableError(request, description=error.message) from None


def _response(grant: issuing.TokenGrant) -> TokenResponse:
    return TokenResponse(
        access_token=grant.access_token,
        expires_in=grant.expires_in,
        scope=format_scope(grant.scopes),
        refresh_token=grant.refresh_token,
        id_token=grant.id_token,
    )


class CodeResponseType(ResponseTypeAuthorizationCode):
    storage: OAuthStorage

    async def validate_request(self, request: OAuthRequest) -> Client:
        client = await super().validate_request(request)
        query, state = request.query, request.query.state
        if not state:
            raise InvalidRequestError(request, description="state is required")
        if query.code_challenge_method != "S256" or not query.code_challenge:
            raise InvalidRequestError(
                request, description="PKCE is required: code_challenge_method=S256", state=state
            )
        if not S256_CHALLENGE.fullmatch(query.code_challenge):
            raise InvalidRequestError(
                request, description="code_challenge is not an S256 challenge", state=state
            )
        if not query.scope.strip():
            raise InvalidScopeError(request, description="scope is required", state=state)
        return client

    async def create_authorization_response(
        self, request: OAuthRequest, client: Client
    ) -> AuthorizationCodeResponse:
        """The code, for what the signed-in person may grant (request.extra[SIGNED_IN])."""
        user, auth_time = request.extra[SIGNED_IN]
        query = request.query
        code, granted = await issuing.issue_code(
            self.storage.unit_of_work,
            domain_client(request),
            user,
            requested=parse_scope(query.scope),
            redirect_uri=query.redirect_uri,
            code_challenge=query.code_challenge or "",
            nonce=query.nonce,
            auth_time=auth_time,
            now=self.storage.clock(),
        )
        return AuthorizationCodeResponse(code=code, scope=format_scope(granted))


class CodeGrant(AuthorizationCodeGrantType):
    storage: OAuthStorage

    async def validate_request(self, request: OAuthRequest) -> Client:
        try:
            return await super().validate_request(request)
        except MismatchingStateError:
            raise InvalidGrantError(
                request, description="code_verifier does not match the code_challenge"
            ) from None

    async def create_token_response(self, request: OAuthRequest, client: Client) -> TokenResponse:
        storage = self.storage
        grant = await _as_oauth_errors(
            request,
            lambda: issuing.redeem_code(
                storage.unit_of_work,
                storage.keys,
                domain_client(request),
                code=request.post.code or "",
                redirect_uri=request.post.redirect_uri or "",
                lifetimes=storage.lifetimes,
                issuer=storage.issuer,
                now=storage.clock(),
            ),
        )
        return _response(grant)


class RefreshGrant(RefreshTokenGrantType):
    storage: OAuthStorage

    async def create_token_response(self, request: OAuthRequest, client: Client) -> TokenResponse:
        storage = self.storage
        grant = await _as_oauth_errors(
            request,
            lambda: issuing.refresh(
                storage.unit_of_work,
                storage.keys,
                domain_client(request),
                refresh_token=request.post.refresh_token or "",
                requested=parse_scope(request.post.scope),
                lifetimes=storage.lifetimes,
                issuer=storage.issuer,
                now=storage.clock(),
            ),
        )
        return _response(grant)


class MachineGrant(ClientCredentialsGrantType):
    storage: OAuthStorage

    async def create_token_response(self, request: OAuthRequest, client: Client) -> TokenResponse:
        storage = self.storage

        async def issue() -> issuing.TokenGrant:
            return issuing.client_credentials(
                storage.keys,
                domain_client(request),
                requested=parse_scope(request.post.scope),
                ttl=storage.lifetimes.access,
            )

        return _response(await _as_oauth_errors(request, issue))


def authorization_server(storage: OAuthStorage) -> AuthorizationServer:
    return AuthorizationServer(
        storage,
        response_types={"code": CodeResponseType},
        grant_types={
            "authorization_code": CodeGrant,
            "refresh_token": RefreshGrant,
            "client_credentials": MachineGrant,
        },
    )


__all__ = ["OAuth2Error", "authorization_server"]

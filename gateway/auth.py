"""Bearer tokens at the edge: checked here, and again by every service they reach.

The kit's ``TokenVerifier`` (fed by the JWKS watch on etcd, as in every service) checks
the signature against the key the token's ``kid`` names (RS256 only: ``alg: none`` or
an HS256 token signed with a public key is refused), the expiry, the issuer and the
audience. A route then asks for one scope (shared/auth/scopes.py). The answers follow
RFC 6750: 401 with ``WWW-Authenticate: Bearer`` (and ``error="invalid_token"`` when a
token was sent), 403 with ``error="insufficient_scope"`` and the scope needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.problems import INSUFFICIENT_SCOPE, UNAUTHENTICATED, Problem
from shared.auth.identity import Identity
from shared.auth.tokens import TokenVerifier
from shared.errors import Unauthenticated

REALM = "shop"

# Documents the scheme in OpenAPI; the check itself is ``Authenticator``'s.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An RS256 access token of the user service (JWT); each route names its scope.",
)


@dataclass(frozen=True)
class Caller:
    """Who called, from a verified token, and the token to forward to the services."""

    identity: Identity
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The caller's credentials for a gRPC call: each service checks them again."""
        return (("authorization", f"Bearer {self.token}"),)

    @property
    def rate_key(self) -> str:
        return f"{self.identity.client_id or '-'}:{self.identity.user_id}"


def unauthenticated(why: str | None = None) -> Problem:
    challenge = f'Bearer realm="{REALM}"'
    if why is not None:
        description = why.replace('"', "'")
        challenge += f', error="invalid_token", error_description="{description}"'
    return Problem(
        UNAUTHENTICATED,
        why or "this request needs a bearer token",
        "UNAUTHENTICATED",
        headers={"WWW-Authenticate": challenge},
    )


def insufficient_scope(scope: str) -> Problem:
    return Problem(
        INSUFFICIENT_SCOPE,
        f"this request needs a token with the scope {scope}",
        "PERMISSION_DENIED",
        headers={
            "WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", '
            f'scope="{scope}"'
        },
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None without one. A header
    of another scheme, or an empty token, is a malformed one (401)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise unauthenticated("the Authorization header is not 'Bearer <token>'")
    return token


class Authenticator:
    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    @property
    def ready(self) -> bool:
        """Whether any signing key is known yet (the JWKS was read from etcd)."""
        return bool(self.verifier.kids)

    def authenticate(self, authorization: str | None) -> Caller | None:
        """The caller of a request's Authorization header: None without one; a problem
        (401) for a header that does not hold a valid token."""
        token = bearer_token(authorization)
        if token is None:
            return None
        try:
            return Caller(self.verifier.verify(token), token)
        except Unauthenticated as error:
            raise unauthenticated(error.message) from None

    def quietly(self, authorization: str | None) -> Caller | None:
        """The caller, or None for a missing or invalid token (the rate limiter's key)."""
        try:
            return self.authenticate(authorization)
        except Problem:
            return None


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.gateway.auth
    return authenticator


async def optional_caller(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Caller | None:
    """A public route's caller: None without a token; an invalid token is still a 401."""
    return _authenticator(request).authenticate(request.headers.get("authorization"))


def scoped(scope: str) -> Callable[..., Awaitable[Caller]]:
    """The dependency of a route that needs a token with ``scope``."""

    async def caller_with_scope(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> Caller:
        caller = _authenticator(request).authenticate(request.headers.get("authorization"))
        if caller is None:
            raise unauthenticated()
        if not caller.identity.has_scope(scope):
            raise insufficient_scope(scope)
        return caller

    caller_with_scope.__name__ = f"caller_with_{scope.replace(':', '_')}"
    return caller_with_scope

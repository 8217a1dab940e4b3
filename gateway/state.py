"""What the routes work with: the parts of one gateway instance, on ``app.state.gateway``.

``gateway/server.py`` builds them on the real services and database; the unit tests
build them on fakes. A route takes them as a dependency (``GatewayDep``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import Authenticator, Caller
from gateway.backends import Auth, Backends
from gateway.carts import CartStore
from gateway.idempotency import IdempotencyStore
from gateway.oauth_proxy import OAuthProxy
from gateway.sessions import SessionStore
from gateway.settings import GatewaySettings
from shared.rpc.interceptors.ratelimit import BucketTable


def _always() -> bool:
    return True


@dataclass
class Gateway:
    settings: GatewaySettings
    auth: Authenticator
    backends: Backends
    sessions: SessionStore
    carts: CartStore
    idempotency: IdempotencyStore
    # The token a public route calls the services with for a visitor who sent none
    # (the services take no call without one); None: such calls go without.
    anonymous_token: Callable[[], Awaitable[str | None]] | None = None
    oauth: OAuthProxy | None = None
    # Whether the database answered the last readiness check.
    database_ok: Callable[[], bool] = _always
    limiter: BucketTable = field(default_factory=BucketTable)

    @property
    def ready(self) -> bool:
        """Ready to serve: the signing keys are loaded and the database answers."""
        return self.auth.ready and self.database_ok()

    async def credentials(self, caller: Caller | None) -> Auth:
        """The metadata a call on ``caller``'s behalf carries: their own token, or the
        gateway's for an anonymous visitor of a public route."""
        if caller is not None:
            return caller.metadata
        token = await self.anonymous_token() if self.anonymous_token is not None else None
        return (("authorization", f"Bearer {token}"),) if token else ()


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(gateway_of)]

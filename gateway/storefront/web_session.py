"""Who is shopping: the session cookie, the tokens behind it, and the CSRF check.

The browser holds one opaque cookie (HttpOnly, SameSite=Lax, Secure over TLS); the
session row holds the tokens. Each request verifies the access token like any bearer
token (the gateway's TokenVerifier: kid, signature, iss, aud, exp) and refreshes it a
minute before it expires, with the refresh token's rotation; a refresh refused (the
family was revoked, say) signs the person out. Any gateway instance can serve any
request: the state is in the shared session table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from starlette.datastructures import FormData

from gateway.auth import Caller
from gateway.sessions import Session
from gateway.state import Gateway, gateway_of
from gateway.storefront import csrf
from gateway.storefront.oauth_client import Refused, TokenClient, TokenSet

log = logging.getLogger(__name__)

COOKIE = "shop_session"
REFRESH_MARGIN_SECONDS = 60


@dataclass(frozen=True)
class Shopper:
    """What the pages show of the person signed in."""

    email: str
    is_admin: bool
    scopes: frozenset[str]


@dataclass
class Visit:
    gateway: Gateway
    session: Session | None
    caller: Caller | None

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        """The credentials a call on this visitor's behalf carries."""
        return self.caller.metadata if self.caller is not None else ()


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRefused(Exception):
    pass


def token_client(gateway: Gateway) -> TokenClient:
    if gateway.oauth is None:
        raise RuntimeError("the gateway has no authorization server to talk to")
    s = gateway.settings
    return TokenClient(gateway.oauth, s.oauth_client_id, s.oauth_client_secret_file, s.public_url)


def set_cookie(response: Response, gateway: Gateway, session_id: str) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=gateway.settings.session_ttl_seconds,
        path="/",
        httponly=True,
        samesite="lax",
        secure=gateway.settings.tls_enabled,
    )


def clear_cookie(response: Response, gateway: Gateway) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="lax", secure=gateway.settings.tls_enabled
    )


async def visit(request: Request) -> Visit:
    """The visitor of this request, signed in or not; sets what every page shows."""
    gateway = gateway_of(request)
    session_id = request.cookies.get(COOKIE, "")
    session = await gateway.sessions.get(session_id) if session_id else None
    caller = await _caller(gateway, session) if session is not None else None
    if caller is not None and session is not None:
        request.state.shopper = Shopper(
            email=str(session.data.get("email", "")),
            is_admin=caller.identity.is_admin,
            scopes=caller.identity.scopes,
        )
        request.state.csrf_token = session.data.get("csrf", "")
        try:
            request.state.cart_count = len(await gateway.carts.lines(caller.identity.user_id))
        except Exception:  # the count is decoration; a page never fails for it
            log.warning("cart count unavailable", exc_info=True)
    return Visit(gateway, session, caller)


async def shopper(request: Request) -> Visit:
    """The visitor, who must be signed in (else: to the sign-in, and back here after)."""
    current = await visit(request)
    if current.caller is None:
        raise SignInRequired(request.url.path)
    return current


async def checked_form(request: Request, current: Visit) -> FormData:
    """The posted form, once its CSRF token matches the session's."""
    form = await request.form()
    offered = form.get(csrf.FIELD)
    expected = current.session.data.get("csrf") if current.session is not None else None
    if not csrf.matches(expected, offered if isinstance(offered, str) else None):
        raise CsrfRefused()
    return form


async def _caller(gateway: Gateway, session: Session) -> Caller | None:
    data = session.data
    token = data.get("access_token")
    if not isinstance(token, str):
        return None
    if float(data.get("expires_at", 0)) - time.time() < REFRESH_MARGIN_SECONDS:
        token = await _refreshed(gateway, session)
        if token is None:
            return None
    caller = gateway.auth.quietly(f"Bearer {token}")
    if caller is None:  # e.g. its key was removed: one refresh, then signed out
        token = await _refreshed(gateway, session)
        caller = gateway.auth.quietly(f"Bearer {token}") if token else None
    return caller


async def _refreshed(gateway: Gateway, session: Session) -> str | None:
    refresh_token = session.data.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        return None
    async with gateway.sessions.refreshing(session.id):
        now = await gateway.sessions.get(session.id)
        if now is not None and now.data.get("refresh_token") != refresh_token:
            # Another request refreshed while this one waited: its tokens are the ones.
            session.data.clear()
            session.data.update(now.data)
            token = now.data.get("access_token")
            return token if isinstance(token, str) else None
        try:
            tokens = await token_client(gateway).refresh(refresh_token)
        except Refused as refused:
            log.info("refresh refused (%s): signed out", refused.error)
            await _sign_out_data(gateway, session)
            return None
        await gateway.sessions.update(session.id, {**session.data, **tokens.as_data()})
    session.data.update(tokens.as_data())
    return tokens.access_token


async def _sign_out_data(gateway: Gateway, session: Session) -> None:
    kept = {k: v for k, v in session.data.items() if k not in _SIGNED_IN_KEYS}
    await gateway.sessions.update(session.id, kept)
    session.data.clear()
    session.data.update(kept)


_SIGNED_IN_KEYS = ("access_token", "refresh_token", "expires_at", "scope", "email", "csrf")


def signed_in_data(tokens: TokenSet, email: str) -> dict[str, Any]:
    return {**tokens.as_data(), "email": email, "csrf": csrf.new_secret()}

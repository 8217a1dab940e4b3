"""Sign-in and sign-out: the authorization code flow with PKCE, the tokens kept here.

``/auth/login`` starts a login in the session (state, PKCE verifier, nonce, where to
return) and sends the browser to the authorization server; ``/auth/callback`` checks
the state, exchanges the code server to server, and gives the session a new id (a
session id planted before sign-in is worth nothing after: no fixation); ``/auth/logout``
revokes the refresh token's family and deletes the session.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from gateway.storefront.oauth_client import Refused
from gateway.storefront.render import message_page, problem_page
from gateway.storefront.web_session import (
    Visit,
    checked_form,
    clear_cookie,
    set_cookie,
    signed_in_data,
    token_client,
    visit,
)

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
VisitDep = Annotated[Visit, Depends(visit)]


def safe_next(path: str | None) -> str:
    """Only a path of this site: never another origin (an open redirect), never
    scheme-relative (``//evil``) or with a backslash some browsers read as ``/``."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


@router.get("/auth/login")
async def login(current: VisitDep, next: Annotated[str | None, Query()] = None) -> Response:
    gateway = current.gateway
    start = token_client(gateway).start_login()
    pending = {
        "login": {
            "state": start.state,
            "verifier": start.verifier,
            "nonce": start.nonce,
            "next": safe_next(next),
        }
    }
    response = RedirectResponse(start.url, status_code=303)
    if current.session is None:
        session = await gateway.sessions.create(pending)
        set_cookie(response, gateway, session.id)
    else:
        await gateway.sessions.update(current.session.id, {**current.session.data, **pending})
    return response


@router.get("/auth/callback")
async def callback(
    request: Request,
    current: VisitDep,
    code: Annotated[str | None, Query(max_length=512)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    gateway = current.gateway
    login_data = current.session.data.get("login") if current.session is not None else None
    if current.session is None or not isinstance(login_data, dict):
        return message_page(
            request,
            400,
            "Sign-in expired",
            "That sign-in link is no longer valid; please sign in again.",
        )
    if not state or not hmac.compare_digest(str(login_data.get("state", "")), state):
        return message_page(
            request,
            400,
            "Sign-in refused",
            "The sign-in answer did not match this browser's request.",
        )
    if error is not None or not code:
        await gateway.sessions.update(
            current.session.id, {k: v for k, v in current.session.data.items() if k != "login"}
        )
        title = "Sign-in cancelled" if error == "access_denied" else "Sign-in failed"
        return message_page(request, 400, title, "You are not signed in. You can try again.")
    client = token_client(gateway)
    try:
        tokens = await client.exchange(code, str(login_data["verifier"]))
        info = await client.userinfo(tokens.access_token)
    except Refused as refused:
        log.info("code exchange refused: %s", refused.error)
        return message_page(request, 400, "Sign-in failed", "Please sign in again.")
    except Exception as failure:
        return problem_page(request, failure)
    rotated = await gateway.sessions.rotate(current.session.id)
    if rotated is None:
        return message_page(request, 400, "Sign-in expired", "Please sign in again.")
    data = {k: v for k, v in rotated.data.items() if k != "login"}
    await gateway.sessions.update(
        rotated.id, {**data, **signed_in_data(tokens, str(info.get("email", "")))}
    )
    response = RedirectResponse(safe_next(str(login_data.get("next", "/"))), status_code=303)
    set_cookie(response, gateway, rotated.id)
    return response


@router.post("/auth/logout")
async def logout(request: Request, current: VisitDep) -> Response:
    gateway = current.gateway
    # Then the authorization server ends its own sign-in session (RP-initiated logout),
    # or the next "Sign in" would come straight back signed in, without a password.
    response: Response = RedirectResponse(token_client(gateway).logout_url(), status_code=303)
    if current.session is None:
        return response
    if current.caller is not None:
        await checked_form(request, current)
    refresh_token = current.session.data.get("refresh_token")
    if isinstance(refresh_token, str) and refresh_token:
        try:
            await token_client(gateway).revoke(refresh_token)
        except Exception:  # signed out here either way; the family expires on its own
            log.warning("refresh token revocation failed", exc_info=True)
    await gateway.sessions.delete(current.session.id)
    clear_cookie(response, gateway)
    return response

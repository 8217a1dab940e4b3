"""aioauth and Starlette, joined: a request's parameters into aioauth's request (each at most
once, RFC 6749 §3.1), aioauth's responses and errors out in the RFCs' exact words."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aioauth.collections import HTTPHeaderDict
from aioauth.config import Settings as OAuthSettings
from aioauth.errors import OAuth2Error
from aioauth.requests import Post, Query
from aioauth.requests import Request as OAuthRequest
from aioauth.responses import Response as OAuthResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

QUERY: tuple[str, ...] = ("client_id", "redirect_uri", "response_type", "state", "scope")
QUERY += ("nonce", "code_challenge", "code_challenge_method", "response_mode")
POST: tuple[str, ...] = ("grant_type", "client_id", "client_secret", "redirect_uri", "scope")
POST += ("refresh_token", "code", "token", "token_type_hint", "code_verifier")
NO_STORE = {"Cache-Control": "no-store"}
# The aioauth settings: TLS is the listener's (server.py), not a URL aioauth could check.
_AIOAUTH = OAuthSettings(INSECURE_TRANSPORT=True)


def client_ip(request: Request) -> str:
    """The browser's address: the gateway's X-Forwarded-For (first entry), else the peer."""
    forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
    return forwarded or (request.client.host if request.client else "unknown")


def single(pairs: list[tuple[str, str]], names: tuple[str, ...]) -> dict[str, str] | None:
    """The parameters by name; None if one of ``names`` appears twice (RFC 6749 §3.1)."""
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in names and name in found:
            return None
        found.setdefault(name, value)
    return found


def oauth_request(
    request: Request, method: str, query: dict[str, str], post: dict[str, str]
) -> OAuthRequest:
    return OAuthRequest(
        method=method,  # type: ignore[arg-type]
        query=Query(**{k: v for k, v in query.items() if k in QUERY}),  # type: ignore[arg-type]
        post=Post(**{k: v for k, v in post.items() if k in POST}),  # type: ignore[arg-type]
        headers=HTTPHeaderDict(dict(request.headers)),
        url=str(request.url),
        settings=_AIOAUTH,
    )


def json_response(response: OAuthResponse) -> JSONResponse:
    """aioauth's answer in the RFC's words: ``error_description``, no empty fields, 200 for
    a revocation (RFC 7009 §2.2; aioauth says 204)."""
    content = {k: v for k, v in response.content.items() if v not in (None, "")}
    if "description" in content:
        content["error_description"] = content.pop("description")
    content.pop("refresh_token_expires_in", None)
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() != "content-type"}
    headers.update({"cache-control": "no-store", "pragma": "no-cache"})
    status = 200 if response.status_code == 204 else int(response.status_code)
    return JSONResponse(content, status, headers=headers)


def redirect_error(
    redirect_uri: str, error: OAuth2Error | str, state: str, text: str = ""
) -> Response:
    """An error sent back to the application (RFC 6749 §4.1.2.1)."""
    params = {"error": error if isinstance(error, str) else error.error}
    description = text or ("" if isinstance(error, str) else error.description)
    if description:
        params["error_description"] = description
    if state:
        params["state"] = state
    return RedirectResponse(with_query(redirect_uri, params), 302)


def with_query(uri: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def bearer_error(status: int, error: str) -> Response:
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    body = {"error": error} if error else {}
    return JSONResponse(
        body, status, headers={"WWW-Authenticate": challenge, "Cache-Control": "no-store"}
    )


def returns_after_logout(redirect_uris: tuple[str, ...], uri: str) -> bool:
    """Where RP-initiated logout may send the browser back to: the root of the origin of
    one of the client's registered redirect URIs, exactly (no open redirect)."""
    for registered in redirect_uris:
        parts = urlsplit(registered)
        if uri == urlunsplit((parts.scheme, parts.netloc, "/", "", "")):
            return True
    return False

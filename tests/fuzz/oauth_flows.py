"""The real OAuth2 flows the fuzzer needs values from, and the placeholders they fill.

A strategy cannot make an authorization code or a signed-in session: those come from
the authorization server, at the moment the request is sent. ``Flows.resolve`` replaces
each placeholder of a call with a real value, run through the gateway as a browser and
the storefront would: ``<<session>>`` a sign-in session of the fuzzer's own user,
``<<code>>`` a fresh code (PKCE, ``VERIFIER``), ``<<refresh>>`` and ``<<access>>`` the
tokens of a fresh code, ``<<csrf:login>>`` / ``<<csrf:consent>>`` the CSRF token of the
form's own ``authorize`` field under the cookie ``<<csrf-cookie>>`` (the double-submit
token is an HMAC the fuzzer can compute, so a hostile form gets past it), and
``<<email>>`` / ``<<password>>`` the fuzzer's user. Its sign-ins come from an address of
their own (``X-Forwarded-For``), so the fuzzer's failed ones never lock it out.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx

from services.user.adapters.oauth.pages import csrf_token
from tests.fuzz.http_call import HttpCall

VERIFIER = "fuzz-verifier-" + "v" * 50
CHALLENGE = (
    base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
)
SESSION_COOKIE = "shop_oauth_session"
CSRF_SECRET = "fuzz-csrf-secret-" + "c" * 32
EMAIL, PASSWORD = "fuzz-oauth@example.com", "fuzz-oauth-password-1"
OWN_ADDRESS = "198.51.100.77"
STOREFRONT = "storefront"


class FlowFailed(RuntimeError):
    """A real flow the fuzzer relies on did not work: the run cannot go on."""


class Flows:
    def __init__(self, http: httpx.AsyncClient, issuer: str, secret: str, test_token: str) -> None:
        self._http = http
        self._issuer = issuer
        self._basic = "Basic " + base64.b64encode(f"{STOREFRONT}:{secret}".encode()).decode()
        self._test_token = test_token
        self._session: str | None = None
        self._access: str | None = None
        self._access_uses = 0

    @property
    def callback(self) -> str:
        return self._issuer + "/auth/callback"

    def _authorize_query(self) -> str:
        return urlencode(
            {
                "response_type": "code",
                "client_id": STOREFRONT,
                "redirect_uri": self.callback,
                "scope": "openid email orders:read",
                "state": "fuzz",
                "code_challenge": CHALLENGE,
                "code_challenge_method": "S256",
            }
        )

    async def session(self) -> str:
        if self._session is None:
            query = self._authorize_query()
            form = {
                "authorize": query,
                "csrf_token": csrf_token(CSRF_SECRET, "login", query),
                "email": EMAIL,
                "password": PASSWORD,
            }
            reply = await self._http.post(
                "/oauth2/login",
                data=form,
                headers={
                    "Cookie": f"shop_oauth_csrf={CSRF_SECRET}",
                    "X-Forwarded-For": OWN_ADDRESS,
                },
            )
            self._http.cookies.clear()
            cookie = reply.cookies.get(SESSION_COOKIE)
            if reply.status_code != 303 or not cookie:
                raise FlowFailed(f"sign-in: {reply.status_code} {reply.text[:300]}")
            self._session = cookie
        return self._session

    def forget_session(self) -> None:
        self._session = None

    async def code(self) -> str:
        session = await self.session()
        reply = await self._http.get(
            "/oauth2/authorize?" + self._authorize_query(),
            headers={"Cookie": f"{SESSION_COOKIE}={session}"},
        )
        self._http.cookies.clear()
        location = reply.headers.get("location", "")
        query = dict(parse_qsl(urlsplit(location).query))
        if reply.status_code != 302 or "code" not in query:
            self.forget_session()  # signed out by a fuzzed logout, perhaps: next time anew
            raise FlowFailed(f"authorize: {reply.status_code} {location or reply.text[:300]}")
        return query["code"]

    async def tokens(self) -> dict[str, str]:
        form = {
            "grant_type": "authorization_code",
            "code": await self.code(),
            "redirect_uri": self.callback,
            "code_verifier": VERIFIER,
        }
        reply = await self._http.post(
            "/oauth2/token", data=form, headers={"Authorization": self._basic}
        )
        if reply.status_code != 200:
            raise FlowFailed(f"token: {reply.status_code} {reply.text[:300]}")
        answer: dict[str, str] = reply.json()
        return answer

    async def access(self) -> str:
        self._access_uses += 1
        if self._access is None or self._access_uses % 25 == 0:
            self._access = (await self.tokens())["access_token"]
        return self._access

    async def _value(self, name: str) -> str:
        if name == "session":
            return await self.session()
        if name == "code":
            return await self.code()
        if name == "refresh":
            return (await self.tokens())["refresh_token"]
        if name == "access":
            return await self.access()
        return {
            "csrf-cookie": CSRF_SECRET,
            "email": EMAIL,
            "password": PASSWORD,
            "test-token": self._test_token,
        }[name]

    async def resolve(self, call: HttpCall) -> HttpCall:
        """The call with every placeholder replaced by a real value."""
        names = ("session", "code", "refresh", "access", "csrf-cookie", "email", "password")
        resolved = call
        for name in (*names, "test-token"):
            marker = f"<<{name}>>"
            if not _mentions(resolved, marker):
                continue
            value = await self._value(name)
            resolved = _substitute(resolved, marker, value)
        if resolved.body and b"%3C%3Ccsrf%3A" in resolved.body:
            resolved = _with_csrf(resolved)
        if call.path == "/oauth2/logout" and _mentions(call, "<<session>>"):
            self.forget_session()
        return resolved


def _mentions(call: HttpCall, marker: str) -> bool:
    encoded = quote(marker, safe="").encode()
    return (
        any(marker in v for pair in call.query for v in pair)
        or any(marker.encode() in v for _, v in call.headers)
        or (call.body is not None and (encoded in call.body or marker.encode() in call.body))
    )


def _substitute(call: HttpCall, marker: str, value: str) -> HttpCall:
    encoded, quoted = marker.encode(), quote(marker, safe="").encode()
    body = call.body
    if body is not None:
        body = body.replace(quoted, quote(value, safe="").encode()).replace(encoded, value.encode())
    return replace(
        call,
        query=tuple((k.replace(marker, value), v.replace(marker, value)) for k, v in call.query),
        headers=tuple((k, v.replace(encoded, value.encode())) for k, v in call.headers),
        body=body,
    )


def _with_csrf(call: HttpCall) -> HttpCall:
    """The form's ``<<csrf:page>>`` as the HMAC of its own ``authorize`` field."""
    assert call.body is not None
    form = dict(parse_qsl(call.body.decode("utf-8", "replace"), keep_blank_values=True))
    body = call.body
    for page in ("login", "consent"):
        marker = quote(f"<<csrf:{page}>>", safe="").encode()
        if marker in body:
            token = csrf_token(CSRF_SECRET, page, form.get("authorize", ""))
            body = body.replace(marker, token.encode())
    return replace(call, body=body)

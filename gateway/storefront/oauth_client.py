"""The storefront as an OAuth2 client of the user service's authorization server.

A confidential client (``client_secret_basic``) with PKCE S256 on every authorization
request. The token endpoint is called server to server, over the gateway's mutual-TLS
link to a user instance (``OAuthProxy.send``), never through the browser: the tokens
stay on the server (the BFF pattern).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from gateway.oauth_proxy import OAuthProxy
from gateway.problems import BAD_GATEWAY, Problem

CALLBACK_PATH = "/auth/callback"
# Everything the storefront may do; the server grants the part the person's role allows.
SCOPES = (
    "openid profile email catalog:read orders:read orders:write wallet:read wallet:write"
    " catalog:admin stock:admin"
)


class Refused(Exception):
    """The authorization server said no (an ``error`` of RFC 6749 §5.2)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str
    expires_at: float  # epoch seconds
    scope: str

    def as_data(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "scope": self.scope,
        }


@dataclass(frozen=True)
class LoginStart:
    """What the session keeps while the browser is at the authorization server."""

    state: str
    verifier: str
    nonce: str
    url: str


def code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class TokenClient:
    def __init__(
        self, proxy: OAuthProxy, client_id: str, secret_file: Path | None, public_url: str
    ) -> None:
        self._proxy = proxy
        self._client_id = client_id
        self._secret_file = secret_file
        self.redirect_uri = public_url.rstrip("/") + CALLBACK_PATH
        self.home = public_url.rstrip("/") + "/"

    def logout_url(self) -> str:
        query = urlencode({"client_id": self._client_id, "post_logout_redirect_uri": self.home})
        return f"/oauth2/logout?{query}"

    def start_login(self) -> LoginStart:
        state, verifier, nonce = (secrets.token_urlsafe(32) for _ in range(3))
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._client_id,
                "redirect_uri": self.redirect_uri,
                "scope": SCOPES,
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        return LoginStart(state, verifier, nonce, f"/oauth2/authorize?{query}")

    async def exchange(self, code: str, verifier: str) -> TokenSet:
        return await self._grant(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
            }
        )

    async def refresh(self, refresh_token: str) -> TokenSet:
        return await self._grant({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def revoke(self, refresh_token: str) -> None:
        """Ends the refresh token's whole family (RFC 7009); failures are not the user's
        problem at sign-out, the session is deleted either way."""
        await self._post(
            "/oauth2/revoke", {"token": refresh_token, "token_type_hint": "refresh_token"}
        )

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        reply = await self._proxy.send(
            "GET", "/oauth2/userinfo", [("authorization", f"Bearer {access_token}")], b""
        )
        if reply.status_code != 200:
            raise Problem(BAD_GATEWAY, "the authorization server did not say who signed in")
        info: dict[str, Any] = reply.json()
        return info

    async def _grant(self, form: dict[str, str]) -> TokenSet:
        reply = await self._post("/oauth2/token", form)
        answer = _json(reply.content)
        if reply.status_code != 200:
            raise Refused(
                str(answer.get("error", "server_error")), str(answer.get("error_description", ""))
            )
        try:
            return TokenSet(
                access_token=str(answer["access_token"]),
                refresh_token=str(answer.get("refresh_token", "")),
                expires_at=time.time() + float(answer.get("expires_in", 300)),
                scope=str(answer.get("scope", "")),
            )
        except (KeyError, TypeError, ValueError):
            raise Problem(BAD_GATEWAY, "the authorization server sent no usable token") from None

    async def _post(self, path: str, form: dict[str, str]) -> Any:
        headers = [("content-type", "application/x-www-form-urlencoded")]
        if self._secret_file is not None:
            secret = self._secret_file.read_text().strip()
            pair = f"{quote(self._client_id, safe='')}:{quote(secret, safe='')}"
            headers.append(("authorization", f"Basic {base64.b64encode(pair.encode()).decode()}"))
        else:
            form = {**form, "client_id": self._client_id}
        return await self._proxy.send("POST", path, headers, urlencode(form).encode())


def _json(content: bytes) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

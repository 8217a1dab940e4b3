"""``/oauth2/...`` and ``/.well-known/...``: passed through to the user service's
authorization server, so the storefront's origin is the issuer browsers and clients see.

The user instances register their HTTPS address in etcd (``Instance.http``); the
gateway picks one round-robin and calls it over mutual TLS with its own certificate
(``gateway.pem``), checking that the server's certificate names ``user`` whatever
address discovery gave (the certificates name services, not addresses). The request
goes on with its method, path, query, body and cookies, plus ``X-Forwarded-For``,
``-Host`` and ``-Proto``; the answer comes back as it is: status, ``Location``,
``Set-Cookie`` and all, redirects not followed. No user instance is a 503 problem, one
that fails or does not answer a 502.

``ClientCredentials`` is the gateway's own token (the OAuth2 client credentials grant
of ``oauth_client_id``), which public pages use to read the catalog for an anonymous
visitor: the services take no call without a token.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
from fastapi import APIRouter, Request, Response

from gateway.problems import BAD_GATEWAY, BAD_REQUEST, Problem, from_domain_error
from shared.auth.scopes import CATALOG_READ
from shared.registry.discovery import Instance, NoInstanceAvailable, ServiceDirectory
from shared.tls import ca_file, cert_file, key_file

log = logging.getLogger(__name__)

USER = "user"
# Hop-by-hop headers (RFC 9110 §7.6.1) and those the proxy sets itself.
DROPPED_REQUEST = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length",
        "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded",
    }
)  # fmt: skip
DROPPED_RESPONSE = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "te", "trailer",
        "transfer-encoding", "upgrade", "content-length", "content-encoding",
    }
)  # fmt: skip
UPSTREAM_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
# What a path or query may hold as it is (RFC 3986's unreserved, sub-delims, ":", "@",
# "/" and "%", so an escape the client sent stays one); anything else is escaped.
URL_SAFE = "/%:@!$&'()*+,;=-._~"


def upstream_context(tls_dir: Path, identity: str = "gateway") -> ssl.SSLContext:
    """Trusts the project's CA only, and presents ``identity``'s certificate."""
    context = ssl.create_default_context(cafile=str(ca_file(tls_dir)))
    context.load_cert_chain(cert_file(tls_dir, identity), key_file(tls_dir, identity))
    return context


class OAuthProxy:
    def __init__(self, directory: ServiceDirectory, client: httpx.AsyncClient) -> None:
        self._directory = directory
        self._client = client
        self._counter = itertools.count()

    def pick(self) -> Instance:
        serving = [i for i in self._directory.instances(USER) if i.http]
        if not serving:
            raise from_domain_error(
                NoInstanceAvailable("no user instance serves the authorization server")
            )
        return serving[next(self._counter) % len(serving)]

    async def send(
        self,
        method: str,
        path_and_query: str,
        headers: Sequence[tuple[str, str]] | Sequence[tuple[bytes, bytes]],
        body: bytes,
    ) -> httpx.Response:
        """One request to a user instance; a 502 problem if it cannot be had."""
        instance = self.pick()
        url = f"https://{instance.http}{path_and_query}"
        try:
            return await self._client.request(
                method,
                url,
                headers=headers,
                content=body,
                timeout=UPSTREAM_TIMEOUT,
                # The certificate names the service, not the address dialled.
                extensions={"sni_hostname": USER},
            )
        except httpx.InvalidURL:  # a target no URL can hold, even escaped
            raise Problem(BAD_REQUEST, "the request's target cannot be passed on") from None
        except httpx.HTTPError as error:
            log.warning("authorization server at %s failed: %r", instance.http, error)
            raise Problem(BAD_GATEWAY, "the authorization server did not answer") from None

    async def forward(self, request: Request) -> Response:
        # As received: the raw header bytes (a value need not be ASCII) and the path still
        # percent-encoded (decoded, ``%3F`` would become a query and ``%1F`` a control
        # character in the upstream URL).
        headers: list[tuple[bytes, bytes]] = [
            (name, value)
            for name, value in request.headers.raw
            if name.decode("latin-1").lower() not in DROPPED_REQUEST
        ]
        # The gateway is the edge: the address it saw is the client's, and a chain the
        # client sent is not passed on (it could pick the IP the sign-in limit counts).
        client = request.client.host if request.client else ""
        if client:
            headers.append((b"x-forwarded-for", client.encode("latin-1")))
        headers.append((b"x-forwarded-host", request.headers.get("host", "").encode("latin-1")))
        headers.append((b"x-forwarded-proto", request.url.scheme.encode()))
        upstream = await self.send(
            request.method, path_and_query(request), headers, await request.body()
        )
        response = Response(content=upstream.content, status_code=upstream.status_code)
        response.raw_headers = [
            *(
                (name.lower(), value)
                for name, value in upstream.headers.raw
                if name.decode("latin-1").lower() not in DROPPED_RESPONSE
            ),
            (b"content-length", str(len(upstream.content)).encode()),
        ]
        return response


def path_and_query(request: Request) -> str:
    """The request's target as the client sent it, percent-encoded: a byte that may not
    stand in a URL as it is (a space, a control, a non-ASCII byte) encoded, and every
    escape (``%2F``, ``%3F``) kept, so the upstream reads the very same path and query."""
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    path = quote(raw_path.decode("latin-1"), safe=URL_SAFE, encoding="latin-1")
    query = request.scope.get("query_string", b"")
    if query:
        path += "?" + quote(query.decode("latin-1"), safe=URL_SAFE + "?", encoding="latin-1")
    return path


class ClientCredentials:
    """The gateway's own access token, fetched with the client credentials grant and
    kept until shortly before it expires."""

    def __init__(self, proxy: OAuthProxy, client_id: str, secret_file: Path) -> None:
        self._proxy = proxy
        self._client_id = client_id
        self._secret_file = secret_file
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def __call__(self) -> str | None:
        if self._token is not None and time.monotonic() < self._expires:
            return self._token
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                await self._fetch()
        return self._token

    async def _fetch(self) -> None:
        secret = self._secret_file.read_text().strip()
        basic = base64.b64encode(f"{quote(self._client_id)}:{quote(secret)}".encode()).decode()
        headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", f"Basic {basic}"),
        ]
        # The catalog's reads alone: a visitor who is not signed in may do nothing else.
        body = urlencode({"grant_type": "client_credentials", "scope": CATALOG_READ}).encode()
        reply = await self._proxy.send("POST", "/oauth2/token", headers, body)
        if reply.status_code != 200:
            log.warning("client credentials grant refused: %s", reply.status_code)
            raise Problem(BAD_GATEWAY, "the gateway could not get its own token")
        answer = reply.json()
        self._token = str(answer["access_token"])
        # A minute early (or at half its life, for a short one).
        lifetime = float(answer.get("expires_in", 300))
        self._expires = time.monotonic() + max(lifetime / 2, lifetime - 60)


def proxy_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    async def forward(request: Request) -> Response:
        proxy: OAuthProxy | None = request.app.state.gateway.oauth
        if proxy is None:
            raise from_domain_error(NoInstanceAvailable("no authorization server is configured"))
        return await proxy.forward(request)

    router.add_api_route("/oauth2/{path:path}", forward, methods=["GET", "POST"])
    router.add_api_route("/.well-known/{path:path}", forward, methods=["GET"])
    return router

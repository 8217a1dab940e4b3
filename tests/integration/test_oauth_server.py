"""The OAuth2 / OpenID Connect authorization server of a real user service instance on the
test stack, driven over HTTPS with a client certificate, as the gateway drives it: the
happy paths (authorization code with PKCE through the sign-in and consent pages, refresh,
revocation, userinfo, client credentials, discovery, JWKS) and every hostile case it must
refuse. The rules alone are proven without a database in tests/unit/user/test_oauth*.py."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import jwt
import pytest
import pytest_asyncio

from services.user.main import SERVICE
from shared.auth.jwks import JWKS_KEY, parse_jwks
from shared.registry.etcd import etcd_client
from shared.settings import DEFAULT_ISSUER
from shared.tls import ClientTLS, ca_file, cert_file, key_file
from shop.user.v1 import user_pb2, user_pb2_grpc
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import bearer

pytestmark = pytest.mark.integration

STOREFRONT_CALLBACK = "http://localhost:8080/auth/callback"
CLI_CALLBACK = "http://127.0.0.1:8976/callback"
CUSTOMER = ["catalog:read", "orders:read", "orders:write", "wallet:read", "wallet:write"]
PASSWORD = "correct-horse-battery"


def clients_file(directory: Path) -> tuple[Path, dict[str, str]]:
    secrets_by_client = {name: secrets.token_urlsafe(32) for name in ("storefront", "loadgen")}
    for name, secret in secrets_by_client.items():
        (directory / f"{name}.secret").write_text(secret + "\n")
    entries = [
        {
            "client_id": "storefront",
            "name": "Storefront",
            "secret_file": str(directory / "storefront.secret"),
            "redirect_uris": [STOREFRONT_CALLBACK],
            "grant_types": ["authorization_code", "refresh_token"],
            "scopes": ["openid", "profile", "email", *CUSTOMER, "catalog:admin", "stock:admin"],
            "first_party": True,
        },
        {
            "client_id": "loadgen",
            "secret_file": str(directory / "loadgen.secret"),
            "grant_types": ["client_credentials"],
            "scopes": CUSTOMER,
        },
        {
            "client_id": "shop-cli",
            "name": "shop CLI",
            "redirect_uris": [CLI_CALLBACK],
            "grant_types": ["authorization_code", "refresh_token"],
            "scopes": ["openid", "email", *CUSTOMER],
        },
    ]
    path = directory / "clients.json"
    path.write_text(json.dumps(entries))
    return path, secrets_by_client


@dataclass
class Server:
    running: RunningService
    base_url: str
    tls_dir: Path
    secrets: dict[str, str]

    def context(self, identity: str | None = "operator") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(ca_file(self.tls_dir)))
        if identity is not None:
            context.load_cert_chain(
                cert_file(self.tls_dir, identity), key_file(self.tls_dir, identity)
            )
        return context

    def client(self, identity: str | None = "operator") -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            transport=_AsUserService(verify=self.context(identity)),
            timeout=10.0,
        )


class _AsUserService(httpx.AsyncHTTPTransport):
    """The server's certificate names the service ("user"), whatever address it is at."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["sni_hostname"] = "user"
        return await super().handle_async_request(request)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(stack, keys, tmp_path_factory) -> AsyncIterator[Server]:
    await recreate_database(stack, "user")
    path, client_secrets = clients_file(Path(tmp_path_factory.mktemp("oauth")))
    async with run_service(SERVICE, stack, keys, oauth_clients_file=path) as running:
        # Found as the gateway finds it: the instance's registration in etcd.
        assert running.host.registration is not None
        async with operator_etcd(stack) as etcd:
            record = await etcd.get(running.host.registration.key.encode())
        address = json.loads(record.value)["http"]
        yield Server(running, f"https://{address}", stack.tls_dir, client_secrets)


@contextlib.asynccontextmanager
async def operator_etcd(stack) -> AsyncIterator[Any]:
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def alice(server: Server) -> str:
    stub = user_pb2_grpc.UserServiceStub(server.running.channel)
    reply = await stub.Register(
        user_pb2.RegisterRequest(email="alice@example.com", password=PASSWORD)
    )
    return reply.user.user_id


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def authorize_params(client_id: str, redirect_uri: str, scope: str, challenge: str, **extra: str):
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return {k: v for k, v in params.items() if v is not None}


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} field in the page"
    return found.group(1).replace("&amp;", "&")


def redirect_query(response: httpx.Response, target: str) -> dict[str, str]:
    assert response.status_code in (302, 303), response.text
    location = response.headers["location"]
    assert location.startswith(target + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def sign_in(
    http: httpx.AsyncClient,
    params: dict[str, str],
    email: str,
    password: str,
    ip: str = "198.51.100.7",
) -> httpx.Response:
    page = await http.get("/oauth2/authorize", params=params)
    assert page.status_code == 200 and 'id="email"' in page.text, page.text
    form = {
        "csrf_token": hidden(page.text, "csrf_token"),
        "authorize": hidden(page.text, "authorize"),
        "email": email,
        "password": password,
    }
    return await http.post(
        "/oauth2/login", data=form, headers={"X-Forwarded-For": f"{ip}, 10.0.0.1"}
    )


async def get_code(
    http: httpx.AsyncClient,
    client_id: str,
    redirect_uri: str,
    scope: str,
    challenge: str,
    **extra: str,
) -> tuple[str, str]:
    """Signs alice in, allows on the consent page if there is one; (code, state)."""
    params = authorize_params(client_id, redirect_uri, scope, challenge, **extra)
    signed = await sign_in(http, params, "alice@example.com", PASSWORD)
    assert signed.status_code == 303, signed.text
    assert signed.headers["location"].startswith(f"{DEFAULT_ISSUER}/oauth2/authorize?")
    again = await http.get(
        urlsplit(signed.headers["location"]).path + "?" + urlsplit(signed.headers["location"]).query
    )
    if again.status_code == 200:  # the consent page
        assert "Allow" in again.text and "Deny" in again.text
        form = {
            "csrf_token": hidden(again.text, "csrf_token"),
            "authorize": hidden(again.text, "authorize"),
            "decision": "allow",
        }
        again = await http.post("/oauth2/consent", data=form)
    query = redirect_query(again, redirect_uri)
    assert query["state"] == params["state"]
    return query["code"], params["state"]


async def token(http: httpx.AsyncClient, **form: str) -> httpx.Response:
    response = await http.post("/oauth2/token", data=form)
    assert response.headers["cache-control"] == "no-store"
    return response


async def cli_tokens(http: httpx.AsyncClient, scope: str = "openid email orders:read") -> dict:
    verifier, challenge = pkce()
    code, _ = await get_code(http, "shop-cli", CLI_CALLBACK, scope, challenge)
    reply = await token(
        http,
        grant_type="authorization_code",
        code=code,
        redirect_uri=CLI_CALLBACK,
        client_id="shop-cli",
        code_verifier=verifier,
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


# --- discovery, keys, the transport -----------------------------------------------------------


async def test_discovery_names_the_issuer_and_every_endpoint(http) -> None:
    reply = await http.get("/.well-known/openid-configuration")
    assert reply.status_code == 200
    document = reply.json()
    assert document["issuer"] == DEFAULT_ISSUER
    for name, path in [
        ("authorization_endpoint", "/oauth2/authorize"),
        ("token_endpoint", "/oauth2/token"),
        ("revocation_endpoint", "/oauth2/revoke"),
        ("userinfo_endpoint", "/oauth2/userinfo"),
        ("end_session_endpoint", "/oauth2/logout"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ]:
        assert document[name] == DEFAULT_ISSUER + path
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]
    assert "password" not in document["grant_types_supported"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(document["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }


async def test_jwks_is_the_key_set_in_etcd(http, stack, keys) -> None:
    async with operator_etcd(stack) as etcd:
        stored = await etcd.get(JWKS_KEY.encode())
    served = await http.get("/.well-known/jwks.json")
    assert served.status_code == 200
    assert served.json() == json.loads(stored.value)
    assert keys.kid in parse_jwks(served.content)  # the bootstrap key the service imported


async def test_health_answers_plainly(http) -> None:
    reply = await http.get("/healthz")
    assert (reply.status_code, reply.text) == (200, "ok")


async def test_a_caller_without_a_certificate_fails_the_handshake(server) -> None:
    async with server.client(identity=None) as anonymous:
        with pytest.raises(httpx.TransportError):
            await anonymous.get("/healthz")


async def test_a_service_certificate_is_not_the_gateway_and_is_disconnected(server) -> None:
    async with server.client(identity="order") as order:
        with pytest.raises(httpx.TransportError):
            await order.get("/healthz")


# --- authorize: refused before the redirect URI is known good -----------------------------------


async def test_a_redirect_uri_not_registered_is_an_error_page_never_a_redirect(http) -> None:
    _, challenge = pkce()
    for uri in (
        "https://evil.example/callback",
        CLI_CALLBACK + "/extra",
        CLI_CALLBACK + "?x=1",
        "",
    ):
        params = authorize_params("shop-cli", uri, "openid", challenge)
        reply = await http.get("/oauth2/authorize", params=params)
        assert reply.status_code == 400, uri
        assert "location" not in reply.headers
        assert "Wrong return address" in reply.text


async def test_an_unknown_client_is_an_error_page(http) -> None:
    _, challenge = pkce()
    reply = await http.get(
        "/oauth2/authorize", params=authorize_params("nobody", CLI_CALLBACK, "openid", challenge)
    )
    assert reply.status_code == 400 and "location" not in reply.headers


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"state": None}, "invalid_request"),
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"scope": "openid catalog:admin"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
    ids=[
        "no-state",
        "no-pkce",
        "plain-pkce",
        "pkce-method-defaults-to-plain",
        "scope-beyond-client",
        "implicit",
    ],
)
async def test_a_bad_authorize_request_is_sent_back_with_its_error_and_state(
    http, change, error
) -> None:
    _, challenge = pkce()
    params = authorize_params("shop-cli", CLI_CALLBACK, "openid", challenge)
    for name, value in change.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    reply = await http.get("/oauth2/authorize", params=params)
    query = redirect_query(reply, CLI_CALLBACK)
    assert query["error"] == error
    assert "code" not in query
    assert query.get("state") == params.get("state")


# --- the sign-in page ---------------------------------------------------------------------------


async def test_pages_carry_the_security_headers(http) -> None:
    _, challenge = pkce()
    page = await http.get(
        "/oauth2/authorize", params=authorize_params("shop-cli", CLI_CALLBACK, "openid", challenge)
    )
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == "default-src 'self'; frame-ancestors 'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert '<button type="submit" id="sign-in">Sign in</button>' in page.text


async def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(http, alice) -> None:
    _, challenge = pkce()
    params = authorize_params("shop-cli", CLI_CALLBACK, "openid", challenge)
    wrong = await sign_in(http, params, "alice@example.com", "not-the-password", ip="198.51.100.20")
    unknown = await sign_in(
        http, params, "nobody@example.com", "not-the-password", ip="198.51.100.20"
    )
    for reply in (wrong, unknown):
        assert reply.status_code == 401
        assert "Email or password is incorrect." in reply.text
        assert "shop_oauth_session" not in reply.headers.get("set-cookie", "")


async def test_a_form_without_its_csrf_token_is_refused(http, alice) -> None:
    _, challenge = pkce()
    params = authorize_params("shop-cli", CLI_CALLBACK, "openid", challenge)
    page = await http.get("/oauth2/authorize", params=params)
    form = {
        "authorize": hidden(page.text, "authorize"),
        "email": "alice@example.com",
        "password": PASSWORD,
    }
    reply = await http.post("/oauth2/login", data={**form, "csrf_token": "forged"})
    assert reply.status_code == 400 and "shop_oauth_session" not in reply.headers.get(
        "set-cookie", ""
    )


async def test_sign_in_is_rate_limited_per_email_without_checking_the_password(
    http, server
) -> None:
    stub = user_pb2_grpc.UserServiceStub(server.running.channel)
    email = f"bob-{uuid.uuid4().hex[:8]}@example.com"
    await stub.Register(user_pb2.RegisterRequest(email=email, password=PASSWORD))
    _, challenge = pkce()
    params = authorize_params("shop-cli", CLI_CALLBACK, "openid", challenge)
    for attempt in range(5):
        reply = await sign_in(http, params, email, f"wrong-{attempt}", ip=f"203.0.113.{attempt}")
        assert reply.status_code == 401
    blocked = await sign_in(http, params, email, PASSWORD, ip="203.0.113.99")
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in blocked.text
    assert "shop_oauth_session" not in blocked.headers.get("set-cookie", "")


async def test_sign_in_is_rate_limited_per_client_ip(http, alice) -> None:
    _, challenge = pkce()
    params = authorize_params("shop-cli", CLI_CALLBACK, "openid", challenge)
    ip = "192.0.2.77"
    for attempt in range(20):
        reply = await sign_in(http, params, f"guess-{attempt}@example.com", "wrong-password", ip=ip)
        assert reply.status_code == 401
    assert (await sign_in(http, params, "alice@example.com", PASSWORD, ip=ip)).status_code == 429
    assert (
        await sign_in(http, params, "alice@example.com", PASSWORD, ip="192.0.2.78")
    ).status_code == 303


# --- the whole flow -----------------------------------------------------------------------------


async def test_code_with_pkce_then_userinfo_refresh_and_revoke(http, server, alice, keys) -> None:
    verifier, challenge = pkce()
    nonce = secrets.token_urlsafe(8)
    code, _ = await get_code(
        http, "shop-cli", CLI_CALLBACK, "openid email orders:read", challenge, nonce=nonce
    )
    reply = await token(
        http,
        grant_type="authorization_code",
        code=code,
        redirect_uri=CLI_CALLBACK,
        client_id="shop-cli",
        code_verifier=verifier,
    )
    assert reply.status_code == 200, reply.text
    tokens = reply.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "email openid orders:read"
    assert 0 < tokens["expires_in"] <= 900

    # The access token is the services' RS256 JWT; the ID token is signed by the same keys.
    keys_by_kid = parse_jwks((await http.get("/.well-known/jwks.json")).content)
    access = jwt.decode(
        tokens["access_token"],
        keys_by_kid[jwt.get_unverified_header(tokens["access_token"])["kid"]],
        algorithms=["RS256"],
        audience="shop",
        issuer=DEFAULT_ISSUER,
    )
    assert (access["sub"], access["client_id"], access["scope"]) == (
        alice,
        "shop-cli",
        "email openid orders:read",
    )
    identity = jwt.decode(
        tokens["id_token"],
        keys_by_kid[jwt.get_unverified_header(tokens["id_token"])["kid"]],
        algorithms=["RS256"],
        audience="shop-cli",
        issuer=DEFAULT_ISSUER,
    )
    assert (identity["sub"], identity["nonce"], identity["email"]) == (
        alice,
        nonce,
        "alice@example.com",
    )
    assert identity["auth_time"] <= identity["iat"] < identity["exp"]

    # A real gRPC service accepts it.
    stub = user_pb2_grpc.UserServiceStub(server.running.channel)
    account = await stub.GetUser(
        user_pb2.GetUserRequest(user_id=alice), metadata=bearer(tokens["access_token"])
    )
    assert account.user.email == "alice@example.com"

    info = await http.get(
        "/oauth2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status_code == 200
    assert info.json() == {"sub": alice, "email": "alice@example.com", "role": "customer"}

    rotated = await token(
        http,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        client_id="shop-cli",
        scope="orders:read",
    )
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()
    assert fresh["refresh_token"] != tokens["refresh_token"] and fresh["scope"] == "orders:read"

    revoked = await http.post(
        "/oauth2/revoke", data={"token": fresh["refresh_token"], "client_id": "shop-cli"}
    )
    assert revoked.status_code == 200
    again = await token(
        http, grant_type="refresh_token", refresh_token=fresh["refresh_token"], client_id="shop-cli"
    )
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    unknown = await http.post(
        "/oauth2/revoke", data={"token": "never-issued", "client_id": "shop-cli"}
    )
    assert unknown.status_code == 200


async def test_storefront_is_first_party_and_authenticates_with_its_secret(
    http, server, alice
) -> None:
    verifier, challenge = pkce()
    code, _ = await get_code(
        http, "storefront", STOREFRONT_CALLBACK, "openid orders:read catalog:admin", challenge
    )
    secret = server.secrets["storefront"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": STOREFRONT_CALLBACK,
        "code_verifier": verifier,
    }
    reply = await http.post("/oauth2/token", data=form, auth=("storefront", secret))
    assert reply.status_code == 200, reply.text
    # A customer cannot grant an admin scope, whatever the client may hold.
    assert reply.json()["scope"] == "openid orders:read"


async def test_logout_ends_the_sign_in_and_returns_only_to_the_clients_origin(http, alice) -> None:
    _, challenge = pkce()
    await get_code(http, "storefront", STOREFRONT_CALLBACK, "openid", challenge)
    params = authorize_params("storefront", STOREFRONT_CALLBACK, "openid", challenge)
    signed_in = await http.get("/oauth2/authorize", params=params)
    assert signed_in.status_code == 302  # first party, still signed in: straight back
    elsewhere = await http.get(
        "/oauth2/logout",
        params={"client_id": "storefront", "post_logout_redirect_uri": "https://evil.example/"},
    )
    assert elsewhere.status_code == 200 and "signed out" in elsewhere.text.lower()
    assert "location" not in elsewhere.headers
    await get_code(http, "storefront", STOREFRONT_CALLBACK, "openid", challenge)
    home = "http://localhost:8080/"
    back = await http.get(
        "/oauth2/logout", params={"client_id": "storefront", "post_logout_redirect_uri": home}
    )
    assert back.status_code == 303 and back.headers["location"] == home
    page = await http.get("/oauth2/authorize", params=params)
    assert page.status_code == 200 and 'id="email"' in page.text  # the password again


async def test_the_consent_page_can_deny(http, alice) -> None:
    _, challenge = pkce()
    params = authorize_params("shop-cli", CLI_CALLBACK, "openid", challenge)
    signed = await sign_in(http, params, "alice@example.com", PASSWORD)
    consent = await http.get("/oauth2/authorize", params=params)
    assert "Allow" in consent.text
    form = {
        "csrf_token": hidden(consent.text, "csrf_token"),
        "authorize": hidden(consent.text, "authorize"),
        "decision": "deny",
    }
    query = redirect_query(await http.post("/oauth2/consent", data=form), CLI_CALLBACK)
    assert signed.status_code == 303
    assert (query["error"], query["state"]) == ("access_denied", params["state"])


# --- the token endpoint's refusals ---------------------------------------------------------------


async def test_a_wrong_code_verifier_is_invalid_grant(http, alice) -> None:
    _, challenge = pkce()
    code, _ = await get_code(http, "shop-cli", CLI_CALLBACK, "openid", challenge)
    other, _ = pkce()
    reply = await token(
        http,
        grant_type="authorization_code",
        code=code,
        redirect_uri=CLI_CALLBACK,
        client_id="shop-cli",
        code_verifier=other,
    )
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_grant")
    missing = await token(
        http,
        grant_type="authorization_code",
        code=code,
        redirect_uri=CLI_CALLBACK,
        client_id="shop-cli",
    )
    assert missing.json()["error"] == "invalid_request"


async def test_a_replayed_code_is_refused_and_what_it_gave_is_revoked(http, alice) -> None:
    verifier, challenge = pkce()
    code, _ = await get_code(http, "shop-cli", CLI_CALLBACK, "openid email", challenge)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CLI_CALLBACK,
        "client_id": "shop-cli",
        "code_verifier": verifier,
    }
    first = await token(http, **form)
    assert first.status_code == 200
    replay = await token(http, **form)
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    tokens = first.json()
    dead = await token(
        http,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        client_id="shop-cli",
    )
    assert dead.json()["error"] == "invalid_grant"
    info = await http.get(
        "/oauth2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status_code == 401
    assert info.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_an_expired_code_is_invalid_grant(http, server, alice) -> None:
    verifier, challenge = pkce()
    code, _ = await get_code(http, "shop-cli", CLI_CALLBACK, "openid", challenge)
    conn = await asyncpg.connect(server.running.dsn)
    try:
        digest = hashlib.sha256(code.encode()).hexdigest()
        await conn.execute(
            "UPDATE oauth_codes SET expires_at = now() - interval '1 second' WHERE code_hash = $1",
            digest,
        )
    finally:
        await conn.close()
    reply = await token(
        http,
        grant_type="authorization_code",
        code=code,
        redirect_uri=CLI_CALLBACK,
        client_id="shop-cli",
        code_verifier=verifier,
    )
    assert reply.json()["error"] == "invalid_grant"


async def test_a_code_is_bound_to_its_client_and_redirect_uri(http, server, alice) -> None:
    verifier, challenge = pkce()
    code, _ = await get_code(http, "shop-cli", CLI_CALLBACK, "openid", challenge)
    stolen = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": STOREFRONT_CALLBACK,
        "code_verifier": verifier,
    }
    by_storefront = await http.post(
        "/oauth2/token", data=stolen, auth=("storefront", server.secrets["storefront"])
    )
    assert by_storefront.json()["error"] == "invalid_grant"
    elsewhere = await token(
        http,
        grant_type="authorization_code",
        code=code,
        redirect_uri="http://127.0.0.1:8976/other",
        client_id="shop-cli",
        code_verifier=verifier,
    )
    assert elsewhere.json()["error"] == "invalid_request"  # not even a registered redirect URI
    # Neither attempt burnt it: its own client still redeems it.
    own = await token(
        http,
        grant_type="authorization_code",
        code=code,
        redirect_uri=CLI_CALLBACK,
        client_id="shop-cli",
        code_verifier=verifier,
    )
    assert own.status_code == 200


async def test_a_refresh_token_used_twice_revokes_its_family(http, alice) -> None:
    tokens = await cli_tokens(http)
    first = await token(
        http,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        client_id="shop-cli",
    )
    assert first.status_code == 200
    newer = first.json()["refresh_token"]
    reuse = await token(
        http,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        client_id="shop-cli",
    )
    assert (reuse.status_code, reuse.json()["error"]) == (400, "invalid_grant")
    dead = await token(http, grant_type="refresh_token", refresh_token=newer, client_id="shop-cli")
    assert dead.json()["error"] == "invalid_grant"


async def test_client_credentials_for_a_machine_client(http, server) -> None:
    reply = await http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "orders:read wallet:read"},
        auth=("loadgen", server.secrets["loadgen"]),
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert "refresh_token" not in body and "id_token" not in body
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == str(uuid.uuid5(uuid.NAMESPACE_URL, "oauth-client:loadgen"))
    assert (claims["role"], claims["scope"], claims["client_id"]) == (
        "customer",
        "orders:read wallet:read",
        "loadgen",
    )
    everything = await http.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "loadgen",
            "client_secret": server.secrets["loadgen"],
        },
    )
    assert everything.json()["scope"] == " ".join(sorted(CUSTOMER))


async def test_client_credentials_refusals(http, server) -> None:
    storefront = ("storefront", server.secrets["storefront"])
    not_registered = await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=storefront
    )
    assert (not_registered.status_code, not_registered.json()["error"]) == (
        400,
        "unauthorized_client",
    )
    wrong_secret = await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("loadgen", "x" * 43)
    )
    assert (wrong_secret.status_code, wrong_secret.json()["error"]) == (401, "invalid_client")
    assert wrong_secret.headers["www-authenticate"].startswith("Basic")
    too_much = await http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "catalog:admin"},
        auth=("loadgen", server.secrets["loadgen"]),
    )
    assert too_much.json()["error"] == "invalid_scope"
    password = await http.post(
        "/oauth2/token",
        data={"grant_type": "password", "username": "alice@example.com", "password": PASSWORD},
        auth=storefront,
    )
    assert password.json()["error"] == "unsupported_grant_type"


async def test_userinfo_needs_a_valid_bearer_token(http, keys) -> None:
    missing = await http.get("/oauth2/userinfo")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    forged = await http.get("/oauth2/userinfo", headers={"Authorization": "Bearer not.a.jwt"})
    assert (forged.status_code, forged.headers["www-authenticate"]) == (
        401,
        'Bearer error="invalid_token"',
    )

"""The OAuth2 server's pure rules: the client (its secret, its exact redirect URIs, what it
may be granted), redeeming a code or a refresh token, the sign-in limit; the clients file;
the discovery document; the CSRF token and the peer-certificate check. No I/O."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from services.user.adapters.oauth import discovery, pages, protocol
from services.user.adapters.oauth.clients import load_clients
from services.user.adapters.oauth.server import PARTIES, peer_name
from services.user.domain import (
    MAX_FAILURES_PER_EMAIL,
    MAX_FAILURES_PER_IP,
    AuthorizationCode,
    OAuthClient,
    RefreshToken,
    login_blocked,
    redeem,
    secret_hash,
)
from shared.auth.identity import Role

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "s" * 43


def client(secret: str | None = SECRET, **changes: object) -> OAuthClient:
    fields: dict[str, object] = {
        "client_id": "app",
        "name": "App",
        "secret_hash": None if secret is None else secret_hash(secret),
        "redirect_uris": ("https://app.example/callback",),
        "grant_types": frozenset({"authorization_code", "refresh_token"}),
        "scopes": frozenset({"openid", "email", "orders:read", "catalog:admin"}),
    }
    return OAuthClient(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_confidential_client_proves_its_secret_and_a_public_one_presents_none() -> None:
    assert client().authenticates(SECRET)
    assert not client().authenticates("")
    assert not client().authenticates(SECRET + "x")
    public = client(secret=None)
    assert public.authenticates("")
    assert not public.authenticates(SECRET)


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/callback/",
        "https://app.example/callback?x=1",
        "https://APP.example/callback",
        "http://app.example/callback",
        "https://app.example/callbackx",
        "https://app.example/",
    ],
)
def test_redirect_uris_match_exactly(uri: str) -> None:
    assert client().redirects_to("https://app.example/callback")
    assert not client().redirects_to(uri)


def test_a_person_grants_only_what_the_client_holds_and_the_role_allows() -> None:
    asked = frozenset({"openid", "orders:read", "orders:write", "catalog:admin"})
    assert client().grantable(asked, Role.CUSTOMER) == {"openid", "orders:read"}
    assert client().grantable(asked, Role.ADMIN) == {"openid", "orders:read", "catalog:admin"}


def _code(**changes: object) -> AuthorizationCode:
    fields: dict[str, object] = {
        "hash": "h",
        "client_id": "app",
        "user_id": uuid.uuid4(),
        "scopes": frozenset({"openid"}),
        "auth_time": NOW,
        "expires_at": NOW + timedelta(seconds=60),
        "redirect_uri": "https://app.example/callback",
        "code_challenge": "c" * 43,
    }
    return AuthorizationCode(**{**fields, **changes})  # type: ignore[arg-type]


def test_redeeming_a_code() -> None:
    assert redeem(_code(), "app", NOW) == "grant"
    assert redeem(None, "app", NOW) == "invalid"
    assert redeem(_code(), "another-app", NOW) == "invalid"
    assert redeem(_code(), "app", NOW + timedelta(seconds=60)) == "invalid"
    assert redeem(_code(used_at=NOW), "app", NOW) == "replay"
    # A replay is a replay even late, so what the code gave is still revoked.
    assert redeem(_code(used_at=NOW), "app", NOW + timedelta(hours=1)) == "replay"
    assert redeem(_code(used_at=NOW), "another-app", NOW) == "invalid"


def test_redeeming_a_refresh_token() -> None:
    token = RefreshToken(
        hash="h",
        client_id="app",
        user_id=uuid.uuid4(),
        scopes=frozenset(),
        auth_time=NOW,
        expires_at=NOW + timedelta(days=1),
        family_id=uuid.uuid4(),
        access_jti="j",
    )
    assert redeem(token, "app", NOW) == "grant"
    assert redeem(replace(token, used_at=NOW), "app", NOW) == "replay"
    assert redeem(replace(token, used_at=NOW, revoked_at=NOW), "app", NOW) == "invalid"
    assert redeem(replace(token, revoked_at=NOW), "app", NOW) == "invalid"


def test_sign_in_is_blocked_past_either_limit() -> None:
    assert not login_blocked(MAX_FAILURES_PER_EMAIL - 1, MAX_FAILURES_PER_IP - 1)
    assert login_blocked(MAX_FAILURES_PER_EMAIL, 0)
    assert login_blocked(0, MAX_FAILURES_PER_IP)


# --- the clients file --------------------------------------------------------------------------


def _write(tmp_path: Path, entries: list[dict[str, object]]) -> Path:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(entries))
    return path


def test_the_clients_file_hashes_each_secret(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    path = _write(
        tmp_path,
        [
            {
                "client_id": "loadgen",
                "secret_file": str(tmp_path / "secret"),
                "grant_types": ["client_credentials"],
                "scopes": ["orders:read"],
            },
            {
                "client_id": "shop-cli",
                "redirect_uris": ["http://127.0.0.1:8976/callback"],
                "grant_types": ["authorization_code", "refresh_token"],
                "scopes": ["openid"],
            },
        ],
    )
    loadgen, cli = load_clients(path)
    assert loadgen.secret_hash == secret_hash(SECRET) and SECRET not in repr(loadgen)
    assert loadgen.authenticates(SECRET)
    assert cli.secret_hash is None and cli.name == "shop-cli" and not cli.first_party


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"client_id": "m", "grant_types": ["client_credentials"]}, "secret_file"),
        ({"client_id": "w", "grant_types": ["authorization_code"]}, "redirect_uri"),
        ({"client_id": "p", "grant_types": ["password"]}, "grant_types"),
        ({"client_id": "i", "grant_types": ["implicit"]}, "grant_types"),
        ({"client_id": "s", "grant_types": ["refresh_token"]}, "comes with"),
        (
            {
                "client_id": "u",
                "grant_types": ["authorization_code"],
                "redirect_uris": ["/relative"],
            },
            "absolute",
        ),
        (
            {
                "client_id": "f",
                "grant_types": ["authorization_code"],
                "redirect_uris": ["https://a.example/cb#frag"],
            },
            "fragment",
        ),
        (
            {
                "client_id": "x",
                "grant_types": ["authorization_code"],
                "redirect_uris": ["https://a.example/cb"],
                "scopes": ["everything"],
            },
            "unknown scopes",
        ),
        ({"client_id": "bad id!", "grant_types": ["authorization_code"]}, "client_id"),
        ({"client_id": "t", "grant_types": ["client_credentials"], "typo": 1}, "typo"),
    ],
)
def test_a_wrong_clients_file_is_refused(tmp_path: Path, entry: dict, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        load_clients(_write(tmp_path, [entry]))


def test_a_short_secret_or_a_duplicate_client_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("password1")
    entry = {"client_id": "m", "secret_file": str(tmp_path / "secret")}
    with pytest.raises(ValueError, match="shorter than"):
        load_clients(_write(tmp_path, [{**entry, "grant_types": ["client_credentials"]}]))
    twice: dict[str, object] = {"client_id": "c", "grant_types": ["authorization_code"]}
    twice["redirect_uris"] = ["https://a.example/cb"]
    with pytest.raises(ValueError, match="more than once"):
        load_clients(_write(tmp_path, [twice, twice]))


# --- the documents and the edges ---------------------------------------------------------------


def test_discovery_builds_every_url_from_the_issuer() -> None:
    document = discovery.document("https://shop.example")
    urls = [v for k, v in document.items() if k.endswith(("_endpoint", "_uri"))]
    assert len(urls) == 6 and all(u.startswith("https://shop.example/") for u in urls)
    assert document["code_challenge_methods_supported"] == ["S256"]


def test_a_csrf_token_is_bound_to_its_cookie_page_and_request() -> None:
    token = pages.csrf_token("k" * 43, "login", "client_id=a&state=1")
    assert token == pages.csrf_token("k" * 43, "login", "client_id=a&state=1")
    assert token != pages.csrf_token("j" * 43, "login", "client_id=a&state=1")
    assert token != pages.csrf_token("k" * 43, "consent", "client_id=a&state=1")
    assert token != pages.csrf_token("k" * 43, "login", "client_id=a&state=2")


def test_a_csrf_token_that_is_not_ascii_is_refused_not_a_crash() -> None:
    """Found by the edge fuzzer: ``csrf_token=%C2%80`` on /oauth2/consent (or login) was a 500
    (hmac.compare_digest takes no str with a non-ASCII character)."""
    cookie = b"shop_oauth_csrf=" + b"k" * 43
    request = Request({"type": "http", "method": "POST", "headers": [(b"cookie", cookie)]})
    for offered in (
        "\x80",
        "\u202e" * 43,
        "\udcff",
        pages.csrf_token("k" * 43, "consent", "\udcff"),
    ):
        assert not pages.csrf_ok(request, "login", "client_id=a", offered)
    assert pages.csrf_ok(request, "login", "é", pages.csrf_token("k" * 43, "login", "é"))


def test_only_the_gateway_and_the_operator_may_connect() -> None:
    def cert(dns: str | None, cn: str) -> dict[str, object]:
        san = (("DNS", dns),) if dns else ()
        return {"subject": ((("commonName", cn),),), "subjectAltName": san}

    assert peer_name(cert("gateway", "gateway")) in PARTIES
    assert peer_name(cert(None, "operator")) in PARTIES
    assert peer_name(cert("order", "gateway")) == "order"  # the SAN wins, as in gRPC
    assert peer_name(None) is None


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("http://localhost:8080/", True),
        ("http://localhost:8080", False),
        ("http://localhost:8080/auth/callback", False),
        ("http://localhost:8081/", False),
        ("https://localhost:8080/", False),
        ("https://evil.example/", False),
        ("", False),
    ],
)
def test_logout_returns_only_to_the_root_of_a_registered_origin(uri: str, allowed: bool) -> None:
    registered = ("http://localhost:8080/auth/callback",)
    assert protocol.returns_after_logout(registered, uri) is allowed

"""Bearer tokens at the edge: every way a token can be wrong is a 401, a missing scope a
403, and the caller's own token is what the services get."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from shared.auth.identity import Role
from shared.auth.scopes import ORDERS_READ, WALLET_READ
from shared.settings import DEFAULT_ISSUER
from tests.unit.gateway.fakes import AUDIENCE, FakeGateway, Keys

ORDERS = "/api/v1/orders"


def claims(**override: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "sub": str(uuid.uuid4()),
        "role": "customer",
        "scope": "orders:read orders:write",
        "client_id": "test-client",
        "iss": DEFAULT_ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    return {**base, **override}


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def refused(gw: FakeGateway, token: str, contains: str) -> None:
    reply = await gw.client.get(ORDERS, headers=gw.bearer(token))
    assert reply.status_code == 401, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    challenge = reply.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="shop"') and 'error="invalid_token"' in challenge
    assert contains in reply.json()["detail"]
    assert gw.backends.calls == []  # refused at the edge: no service was asked


async def test_no_token_is_a_challenge(gw: FakeGateway) -> None:
    reply = await gw.client.get(ORDERS)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="shop"'
    assert reply.json()["type"] == "https://shop.local/problems/unauthenticated"


async def test_a_header_of_another_scheme_is_refused(gw: FakeGateway) -> None:
    reply = await gw.client.get(ORDERS, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert reply.status_code == 401
    assert "Bearer <token>" in reply.json()["detail"]


async def test_a_key_the_jwks_does_not_hold_is_refused(gw: FakeGateway) -> None:
    await refused(gw, Keys().token(), "unknown key")


async def test_a_token_signed_by_another_key_under_our_kid_is_refused(
    gw: FakeGateway, keys: Keys
) -> None:
    other = Keys()
    forged = jwt.encode(claims(), other.private, algorithm="RS256", headers={"kid": keys.kid})
    await refused(gw, forged, "invalid token")


async def test_alg_none_is_refused(gw: FakeGateway, keys: Keys) -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': keys.kid})}.{b64(claims())}."
    await refused(gw, token, "invalid token")


async def test_hs256_keyed_with_the_public_key_is_refused(gw: FakeGateway, keys: Keys) -> None:
    public_pem = keys.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64({"alg": "HS256", "typ": "JWT", "kid": keys.kid})
    payload = b64(claims(role="admin", scope="catalog:admin"))
    import hashlib
    import hmac

    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    await refused(gw, token, "invalid token")


async def test_an_expired_token_is_refused(gw: FakeGateway, keys: Keys) -> None:
    await refused(gw, keys.token(ttl=timedelta(seconds=-60)), "expired")


@pytest.mark.parametrize(
    ("claim", "value"), [("iss", "https://evil.example"), ("aud", "another-api")]
)
async def test_another_issuer_or_audience_is_refused(
    gw: FakeGateway, keys: Keys, claim: str, value: str
) -> None:
    token = jwt.encode(
        claims(**{claim: value}), keys.private, algorithm="RS256", headers={"kid": keys.kid}
    )
    await refused(gw, token, "invalid token")


async def test_a_token_without_the_scope_is_a_403(gw: FakeGateway, keys: Keys) -> None:
    token = keys.token(scopes=[ORDERS_READ])
    reply = await gw.client.get("/api/v1/wallet", headers=gw.bearer(token))
    assert reply.status_code == 403
    assert reply.headers["www-authenticate"] == (
        f'Bearer realm="shop", error="insufficient_scope", scope="{WALLET_READ}"'
    )
    body = reply.json()
    assert body["type"] == "https://shop.local/problems/insufficient-scope"
    assert WALLET_READ in body["detail"]


async def test_a_customer_token_cannot_reach_the_admin_routes(gw: FakeGateway) -> None:
    reply = await gw.client.put(
        "/api/v1/admin/stock/SKU-1", json={"available": 5}, headers=gw.customer()
    )
    assert reply.status_code == 403
    assert 'scope="stock:admin"' in reply.headers["www-authenticate"]


async def test_a_public_route_refuses_a_bad_token_rather_than_ignore_it(gw: FakeGateway) -> None:
    reply = await gw.client.get("/api/v1/products", headers=gw.bearer("not-a-jwt"))
    assert reply.status_code == 401
    assert "malformed" in reply.json()["detail"]


async def test_the_callers_token_is_forwarded_to_the_service(gw: FakeGateway, keys: Keys) -> None:
    token = keys.token(Role.CUSTOMER, scopes=[ORDERS_READ])
    reply = await gw.client.get(ORDERS, headers=gw.bearer(token))
    assert reply.status_code == 200
    assert gw.backends.calls == [("ListOrders", (("authorization", f"Bearer {token}"),))]


async def test_an_anonymous_public_read_goes_with_the_gateways_own_token(gw: FakeGateway) -> None:
    async def own_token() -> str:
        return "gateway-token"

    gw.gateway.anonymous_token = own_token
    assert (await gw.client.get("/api/v1/products")).status_code == 200
    assert gw.backends.calls == [("ListProducts", (("authorization", "Bearer gateway-token"),))]

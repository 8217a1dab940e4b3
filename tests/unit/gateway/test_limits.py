"""What every request meets: security headers, the body limit, the rate limit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.limits import CSP
from tests.unit.gateway.fakes import FakeGateway, Keys, fake_gateway

SECURITY = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_secured(headers: object, hsts: bool = False) -> None:
    for name, value in SECURITY.items():
        assert headers[name] == value, name  # type: ignore[index]
    assert ("strict-transport-security" in headers) is hsts  # type: ignore[operator]


async def test_every_answer_carries_the_security_headers(gw: FakeGateway) -> None:
    answers = [
        await gw.client.get("/api/v1/products"),
        await gw.client.get("/nowhere"),
        await gw.client.get("/api/v1/orders"),
        await gw.client.delete("/api/v1/products"),
        await gw.client.get("/healthz/live"),
    ]
    assert [a.status_code for a in answers] == [200, 404, 401, 405, 200]
    for answer in answers:
        assert_secured(answer.headers)
    assert CSP == "default-src 'self'; frame-ancestors 'none'; form-action 'self'"


async def test_hsts_only_when_the_gateway_serves_tls(keys: Keys, tmp_path: Path) -> None:
    tls = fake_gateway(keys, tls_cert_file=tmp_path / "c.pem", tls_key_file=tmp_path / "k.pem")
    async with tls.client:
        reply = await tls.client.get("/healthz/live")
    assert_secured(reply.headers, hsts=True)
    assert reply.headers["strict-transport-security"].startswith("max-age=")


async def test_a_body_over_the_limit_is_refused_unread(gw: FakeGateway) -> None:
    limit = gw.gateway.settings.max_body_bytes
    reply = await gw.client.post(
        "/api/v1/orders",
        content=b"{" + b" " * limit + b"}",
        headers={**gw.customer(), "Idempotency-Key": "big", "content-type": "application/json"},
    )
    assert reply.status_code == 413
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["type"] == "https://shop.local/problems/payload-too-large"
    assert_secured(reply.headers)
    assert gw.backends.calls == []


async def test_a_chunked_body_is_cut_off_at_the_limit(gw: FakeGateway) -> None:
    limit = gw.gateway.settings.max_body_bytes

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"items": ['
        for _ in range(limit // 1000 + 1):
            yield b" " * 1000

    reply = await gw.client.post(
        "/api/v1/orders",
        content=chunks(),
        headers={**gw.customer(), "Idempotency-Key": "big", "content-type": "application/json"},
    )
    assert reply.status_code == 413
    assert gw.backends.calls == []


@pytest.fixture
async def limited(keys: Keys) -> AsyncIterator[FakeGateway]:
    fake = fake_gateway(keys, rate_limit_per_second=0.5, rate_limit_burst=2)
    async with fake.client:
        yield fake


async def test_over_the_limit_is_a_429_with_retry_after(limited: FakeGateway) -> None:
    user = limited.customer(uuid.uuid4())
    codes = [
        (await limited.client.get("/api/v1/orders", headers=user)).status_code for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    refused = await limited.client.get("/api/v1/orders", headers=user)
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["type"] == "https://shop.local/problems/rate-limited"
    assert_secured(refused.headers)
    # Another client (another user's token) has a bucket of its own; probes are never limited.
    other = limited.customer(uuid.uuid4())
    assert (await limited.client.get("/api/v1/orders", headers=other)).status_code == 200
    assert (await limited.client.get("/healthz/live")).status_code == 200


async def test_anonymous_clients_are_limited_by_address(limited: FakeGateway) -> None:
    codes = [(await limited.client.get("/api/v1/products")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    # A made-up token is not a way around it: an invalid token counts as its address.
    bogus = await limited.client.get("/api/v1/products", headers=limited.bearer("x.y.z"))
    assert bogus.status_code == 429

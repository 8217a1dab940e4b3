"""Signing keys that rotate, on the real PostgreSQL and etcd of the test stack.

The JWKS in etcd reaches every verifier within moments; a removed key's tokens are
refused even when a verifier had cached them as good; two user instances starting
on an empty table agree on one key; a rotation on one instance is followed by the
other; the background task removes a retired key after the token lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aetcd
import asyncpg
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.stack import Stack
from services.product.main import SERVICE as PRODUCT
from services.user.adapters.admin import ensure_admin
from services.user.adapters.keyring import SigningKeyring
from services.user.domain import SigningKeyPolicy
from services.user.main import SERVICE as USER
from services.user.persistence import PostgresUserUnitOfWork
from services.user.settings import UserSettings
from shared.auth.identity import Role
from shared.auth.jwks import JWKS_KEY, parse_jwks, publish_jwks, read_jwks
from shared.auth.keys import key_id
from shared.auth.tokens import TokenIssuer
from shared.db.pool import create_pool
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS
from shop.product.v1 import product_pb2, product_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import AUDIENCE, ISSUER, TestKeys, bearer

pytestmark = pytest.mark.integration

PICK_UP_SECONDS = 1.0


async def wait_for(predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``predicate`` held; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def list_products(product: RunningService, token: str) -> None:
    stub = product_pb2_grpc.ProductServiceStub(product.channel)
    await stub.ListProducts(product_pb2.ListProductsRequest(page_size=1), metadata=bearer(token))


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@contextlib.asynccontextmanager
async def restoring_jwks(stack: Stack, keys: TestKeys) -> AsyncIterator[None]:
    """Tests that replace the JWKS leave the test key published for the next ones."""
    try:
        yield
    finally:
        await keys.publish(stack.etcd_endpoint, stack.tls_dir)


async def test_a_verifier_picks_up_a_new_key_and_drops_a_removed_one_even_if_cached(
    stack: Stack, keys: TestKeys
) -> None:
    async with run_service(PRODUCT, stack, keys) as product, restoring_jwks(stack, keys):
        verifier = product.host.verifier
        assert verifier.kids == {keys.kid}  # loaded at start: published before it started
        old_token = keys.token()
        await list_products(product, old_token)  # verified once: now cached as good

        new = other_key()
        new_token = TokenIssuer(new, ISSUER, AUDIENCE, timedelta(minutes=5)).issue(
            uuid.uuid4(), Role.CUSTOMER
        )[0]
        error = await refused(list_products(product, new_token))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "unknown key" in (error.details() or "")

        etcd = etcd_client(stack.etcd_endpoint, tls=ClientTLS(stack.tls_dir, "user"))
        try:
            # Both keys: the new one arrives, the old one's tokens still verify.
            await publish_jwks(etcd, [new.public_key(), keys.public_key])
            took = await wait_for(lambda: key_id(new.public_key()) in verifier.kids, 5.0)
            assert took < PICK_UP_SECONDS, f"new key picked up after {took:.2f}s"
            await list_products(product, new_token)
            await list_products(product, old_token)

            # The old key leaves the set: its token, cached as good a moment ago, is refused.
            await publish_jwks(etcd, [new.public_key()])
            took = await wait_for(lambda: keys.kid not in verifier.kids, 5.0)
            assert took < PICK_UP_SECONDS, f"removal picked up after {took:.2f}s"
            error = await refused(list_products(product, old_token))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "unknown key" in (error.details() or "")
            await list_products(product, new_token)

            # No document at all: every token is refused, and the service keeps serving.
            await etcd.delete(JWKS_KEY.encode())
            await wait_for(lambda: not verifier.kids, 5.0)
            error = await refused(list_products(product, new_token))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await etcd.close()


async def test_a_service_starts_without_a_jwks_and_takes_one_when_it_appears(
    stack: Stack, keys: TestKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def publish_nothing(self: TestKeys, etcd_endpoint: str, tls_dir: Path) -> None:
        pass

    etcd = etcd_client(stack.etcd_endpoint, tls=ClientTLS(stack.tls_dir, "user"))
    try:
        async with restoring_jwks(stack, keys):
            await etcd.delete(JWKS_KEY.encode())
            with monkeypatch.context() as patch:
                patch.setattr(TestKeys, "publish", publish_nothing)  # run_service's first step
                started = time.monotonic()
                async with run_service(PRODUCT, stack, keys) as product:
                    assert time.monotonic() - started < 10  # did not sit waiting for a JWKS
                    assert not product.host.verifier.kids
                    token = keys.token()
                    error = await refused(list_products(product, token))
                    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "unknown key" in (error.details() or "")
                    await publish_jwks(etcd, [keys.public_key])
                    await wait_for(lambda: keys.kid in product.host.verifier.kids, 1.0)
                    await list_products(product, token)
    finally:
        await etcd.close()


def keyring(pool: asyncpg.Pool, etcd: aetcd.Client, bootstrap: Path | None) -> SigningKeyring:
    settings = UserSettings()
    return SigningKeyring(
        lambda: PostgresUserUnitOfWork(pool),
        etcd,
        SigningKeyPolicy(timedelta(seconds=settings.token_ttl_seconds), timedelta(seconds=30)),
        issuer=ISSUER,
        audience=AUDIENCE,
        bootstrap_key_file=bootstrap,
    )


async def test_two_instances_starting_on_an_empty_table_agree_on_one_key(
    stack: Stack, keys: TestKeys, tmp_path: Path
) -> None:
    dsn = await recreate_database(stack, "user")
    await USER.migrate(UserSettings(pg_dsn=dsn))
    pool = await create_pool(dsn, min_size=1, max_size=4)
    clients = [
        etcd_client(stack.etcd_endpoint, tls=ClientTLS(stack.tls_dir, "user")) for _ in range(2)
    ]
    # No key file: each would generate its own key if the first start were not serialised.
    rings = [keyring(pool, c, tmp_path / "absent.pem") for c in clients]
    try:
        async with restoring_jwks(stack, keys):
            await asyncio.gather(*(r.start() for r in rings))
            conn = await asyncpg.connect(dsn)
            try:
                kids = [r["kid"] for r in await conn.fetch("SELECT kid FROM signing_keys")]
            finally:
                await conn.close()
            assert len(kids) == 1
            assert rings[0].signing_kid == rings[1].signing_kid == kids[0]
            raw = await read_jwks(clients[0])
            assert raw is not None and list(parse_jwks(raw)) == kids
            # Many maintenance rounds at once change nothing.
            await asyncio.gather(*(r.maintain() for r in rings for _ in range(5)))
            assert await read_jwks(clients[0]) == raw
    finally:
        for r in rings:
            await r.stop()
        for c in clients:
            await c.close()
        await pool.close()
    await recreate_database(stack, "user")  # the next tests bootstrap from the test key


async def login_kid(service: RunningService, email: str, password: str) -> str:
    stub = user_pb2_grpc.UserServiceStub(service.channel)
    reply = await stub.Login(user_pb2.LoginRequest(email=email, password=password))
    return str(jwt.get_unverified_header(reply.access_token)["kid"])


async def test_rotation_signs_with_the_new_key_everywhere_and_removes_the_old_after_the_ttl(
    stack: Stack, keys: TestKeys
) -> None:
    await recreate_database(stack, "user")
    short: dict[str, Any] = {"token_ttl_seconds": 4, "signing_key_leeway_seconds": 0.5}
    removal_seconds = 4.5
    async with (
        restoring_jwks(stack, keys),
        run_service(USER, stack, keys, **short) as one,
        run_service(USER, stack, keys, **short) as two,
        run_service(PRODUCT, stack, keys) as product,
    ):
        stub = user_pb2_grpc.UserServiceStub(one.channel)
        admin = bearer(keys.token(Role.ADMIN))
        listed = await stub.ListSigningKeys(user_pb2.ListSigningKeysRequest(), metadata=admin)
        assert [(k.kid, k.signing) for k in listed.keys] == [(keys.kid, True)]
        email, password = "rotating@example.com", "rotating-secret-1"
        await stub.Register(user_pb2.RegisterRequest(email=email, password=password))
        assert await login_kid(two, email, password) == keys.kid  # the imported bootstrap key

        # A customer may not rotate.
        error = await refused(
            stub.RotateSigningKey(
                user_pb2.RotateSigningKeyRequest(), metadata=bearer(keys.token(Role.CUSTOMER))
            )
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED

        long_lived_old = keys.token(ttl=timedelta(minutes=30))  # outlives its key on purpose
        await list_products(product, long_lived_old)  # cached as good
        asked_at = time.monotonic()  # the key retires during the call: after this moment
        rotated = await stub.RotateSigningKey(user_pb2.RotateSigningKeyRequest(), metadata=admin)
        rotated_at = time.monotonic()
        new_kid = rotated.keys[0].kid
        assert [(k.kid, k.signing) for k in rotated.keys] == [(new_kid, True), (keys.kid, False)]
        old = rotated.keys[1]
        assert old.retired_at.ToDatetime() == rotated.keys[0].created_at.ToDatetime()
        removal = old.removes_at.ToDatetime() - old.retired_at.ToDatetime()
        assert removal == timedelta(seconds=removal_seconds)  # token ttl + leeway
        assert not rotated.keys[0].HasField("removes_at")

        # Every verifier has the new key at once; the old key's tokens still verify.
        await wait_for(lambda: new_kid in product.host.verifier.kids, PICK_UP_SECONDS)
        await wait_for(lambda: new_kid in two.host.verifier.kids, PICK_UP_SECONDS)
        await list_products(product, long_lived_old)
        # Both user instances sign with the new key (the other one followed the JWKS).
        assert await login_kid(one, email, password) == new_kid
        assert await login_kid(two, email, password) == new_kid

        # After ttl + leeway the background task removes it; its token is refused.
        await wait_for(lambda: keys.kid not in product.host.verifier.kids, 15.0)
        removed = time.monotonic()
        assert removed - asked_at >= removal_seconds, f"{removed - asked_at:.2f}s"
        assert removed - rotated_at < removal_seconds + 1.5, f"{removed - rotated_at:.2f}s"
        error = await refused(list_products(product, long_lived_old))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "unknown key" in (error.details() or "")
        assert await one.count("signing_keys") == 1  # its private key is gone too
        error = await refused(
            stub.ListSigningKeys(user_pb2.ListSigningKeysRequest(), metadata=admin)
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # the old admin token too
        await ensure_admin(one.dsn, "keys-admin@example.com", "keys-admin-secret-1")
        login = await stub.Login(
            user_pb2.LoginRequest(email="keys-admin@example.com", password="keys-admin-secret-1")
        )
        listed = await stub.ListSigningKeys(
            user_pb2.ListSigningKeysRequest(), metadata=bearer(login.access_token)
        )
        assert [(k.kid, k.signing) for k in listed.keys] == [(new_kid, True)]
    await recreate_database(stack, "user")  # the next tests bootstrap from the test key

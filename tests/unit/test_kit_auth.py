"""Tokens and access rules: signature, expiry, audience, roles."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from shared.auth.identity import Role
from shared.auth.keys import generate_keypair, key_id, load_private_key, load_public_key
from shared.auth.tokens import TokenIssuer, TokenVerifier
from shared.errors import Unauthenticated
from shared.rpc.interceptors.auth import Access, AccessPolicy


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_keypair(directory)
    return directory


def issuer(
    key_dir: Path, ttl: timedelta = timedelta(minutes=5), audience: str = "shop"
) -> TokenIssuer:
    return TokenIssuer(load_private_key(key_dir / "private.pem"), "shop-user", audience, ttl)


def verifier(key_dir: Path) -> TokenVerifier:
    return TokenVerifier([load_public_key(key_dir / "public.pem")], "shop-user", "shop")


def test_issued_token_verifies_to_the_same_identity(key_dir: Path) -> None:
    user_id = uuid.uuid4()
    token, _ = issuer(key_dir).issue(user_id, Role.ADMIN)
    identity = verifier(key_dir).verify(token)
    assert identity.user_id == user_id and identity.role is Role.ADMIN


def test_token_carries_the_required_claims_and_kid(key_dir: Path) -> None:
    token, _ = issuer(key_dir).issue(uuid.uuid4(), Role.CUSTOMER)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "RS256"
    assert header["kid"] == key_id(load_public_key(key_dir / "public.pem"))
    assert {"sub", "role", "exp", "iss", "aud"} <= claims.keys()


def test_expired_token_is_rejected(key_dir: Path) -> None:
    token, _ = issuer(key_dir, ttl=timedelta(seconds=-30)).issue(uuid.uuid4(), Role.ADMIN)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier(key_dir).verify(token)


def test_wrong_audience_is_rejected(key_dir: Path) -> None:
    token, _ = issuer(key_dir, audience="someone-else").issue(uuid.uuid4(), Role.ADMIN)
    with pytest.raises(Unauthenticated):
        verifier(key_dir).verify(token)


def test_token_from_another_key_is_rejected(key_dir: Path, tmp_path: Path) -> None:
    generate_keypair(tmp_path)
    token, _ = issuer(tmp_path).issue(uuid.uuid4(), Role.ADMIN)
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier(key_dir).verify(token)


def test_tampered_token_is_rejected(key_dir: Path) -> None:
    token, _ = issuer(key_dir).issue(uuid.uuid4(), Role.CUSTOMER)
    head, _body, signature = token.split(".")
    forged = jwt.encode({"sub": str(uuid.uuid4()), "role": "admin"}, "x" * 32, algorithm="HS256")
    with pytest.raises(Unauthenticated):
        verifier(key_dir).verify(f"{head}.{forged.split('.')[1]}.{signature}")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c"])
def test_garbage_is_rejected(key_dir: Path, garbage: str) -> None:
    with pytest.raises(Unauthenticated):
        verifier(key_dir).verify(garbage)


def test_policy_defaults_to_authenticated_and_keeps_probes_open() -> None:
    policy = AccessPolicy({"/shop.x.v1.X/Admin": Access.ADMIN})
    assert policy.access_for("/shop.x.v1.X/Admin") is Access.ADMIN
    assert policy.access_for("/shop.x.v1.X/Other") is Access.AUTHENTICATED
    assert policy.access_for("/grpc.health.v1.Health/Check") is Access.PUBLIC
    assert (
        policy.access_for("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        is Access.PUBLIC
    )

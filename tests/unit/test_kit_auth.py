"""Tokens and access rules: signature, expiry, audience, roles."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth.identity import Role
from shared.auth.keys import generate_keypair, key_id, load_private_key, load_public_key
from shared.auth.scopes import CATALOG_ADMIN, CUSTOMER_SCOPES, ORDERS_READ, ORDERS_WRITE
from shared.auth.tokens import LOGIN_CLIENT, TokenIssuer, TokenVerifier
from shared.errors import Unauthenticated
from shared.rpc.interceptors.auth import Access, AccessPolicy
from tests.support.tokens import ISSUER


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_keypair(directory)
    return directory


def issuer(
    key_dir: Path, ttl: timedelta = timedelta(minutes=5), audience: str = "shop"
) -> TokenIssuer:
    return TokenIssuer(load_private_key(key_dir / "private.pem"), ISSUER, audience, ttl)


def verifier(key_dir: Path) -> TokenVerifier:
    return TokenVerifier([load_public_key(key_dir / "public.pem")], ISSUER, "shop")


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
    assert {"sub", "role", "scope", "client_id", "exp", "iss", "aud", "jti"} <= claims.keys()


def test_a_login_token_holds_the_roles_scopes_and_a_granted_token_only_its_own(
    key_dir: Path,
) -> None:
    login = verifier(key_dir).verify(issuer(key_dir).issue(uuid.uuid4(), Role.CUSTOMER)[0])
    assert login.scopes == CUSTOMER_SCOPES and login.client_id == LOGIN_CLIENT
    admin = verifier(key_dir).verify(issuer(key_dir).issue(uuid.uuid4(), Role.ADMIN)[0])
    assert CATALOG_ADMIN in admin.scopes
    granted, _ = issuer(key_dir).issue(
        uuid.uuid4(), Role.ADMIN, scopes=[ORDERS_READ], client_id="script"
    )
    narrow = verifier(key_dir).verify(granted)
    assert narrow.scopes == {ORDERS_READ} and narrow.client_id == "script"


def test_a_token_without_a_scope_claim_is_refused(key_dir: Path) -> None:
    key = load_private_key(key_dir / "private.pem")
    assert isinstance(key, rsa.RSAPrivateKey)
    claims: dict[str, object] = {"sub": str(uuid.uuid4()), "role": "customer"}
    claims |= {"iss": ISSUER, "aud": "shop", "exp": 4_000_000_000}
    kid = key_id(load_public_key(key_dir / "public.pem"))
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
    with pytest.raises(Unauthenticated, match="scope"):
        verifier(key_dir).verify(token)


def test_a_policy_cannot_ask_a_scope_of_a_public_method() -> None:
    with pytest.raises(ValueError, match="public"):
        AccessPolicy({"/s/M": Access.PUBLIC}, scopes={"/s/M": ORDERS_READ})
    policy = AccessPolicy({}, scopes={"/s/M": ORDERS_WRITE})
    assert policy.scope_for("/s/M") == ORDERS_WRITE and policy.scope_for("/s/N") is None


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

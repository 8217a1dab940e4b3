"""The signing keyring (services/user/adapters/keyring.py) on the fake unit of work and a
fake etcd: bootstrap, rotation, removal and publishing, without PostgreSQL or etcd.
Many instances at once, on the real advisory lock, are tests/integration/test_signing_keys.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.user.adapters.keyring import SigningKeyring
from services.user.domain import SigningKeyPolicy
from shared.auth.identity import Role
from shared.auth.jwks import JWKS_KEY, parse_jwks
from shared.auth.keys import key_id
from shared.auth.tokens import TokenVerifier
from shared.errors import Unauthenticated, Unavailable
from tests.support.tokens import ISSUER
from tests.unit.user.fakes import Clock, FakeEtcd, FakeUserUnitOfWork

AUDIENCE = "shop"
POLICY = SigningKeyPolicy(token_ttl=timedelta(hours=1), leeway=timedelta(seconds=30))


@pytest.fixture
def uow() -> FakeUserUnitOfWork:
    return FakeUserUnitOfWork()


@pytest.fixture
def etcd() -> FakeEtcd:
    return FakeEtcd()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def keyring(
    uow: FakeUserUnitOfWork, etcd: FakeEtcd, clock: Clock, bootstrap: Path | None = None
) -> SigningKeyring:
    return SigningKeyring(
        uow,
        etcd,
        POLICY,
        issuer=ISSUER,
        audience=AUDIENCE,
        bootstrap_key_file=bootstrap,
        clock=clock,
    )


def published(etcd: FakeEtcd) -> list[str]:
    return list(parse_jwks(etcd.values[JWKS_KEY.encode()]))


def verifies(etcd: FakeEtcd, token: str) -> bool:
    keys = parse_jwks(etcd.values[JWKS_KEY.encode()]).values()
    try:
        TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE).verify(token)
    except Unauthenticated:
        return False
    return True


async def test_the_first_round_makes_a_key_publishes_it_and_signs_with_it(uow, etcd, clock) -> None:
    ring = keyring(uow, etcd, clock)
    with pytest.raises(Unavailable):
        ring.issue(uuid.uuid4(), Role.CUSTOMER)  # nothing loaded yet
    assert await ring.maintain() is None  # no retired key: no removal pending
    [kid] = uow.signing_keys.keys
    assert ring.signing_kid == kid and published(etcd) == [kid]
    token, _ = ring.issue(uuid.uuid4(), Role.ADMIN)
    assert jwt.get_unverified_header(token)["kid"] == kid
    assert verifies(etcd, token)
    assert uow.signing_keys.locks == 1


async def test_the_bootstrap_key_file_is_imported_into_an_empty_table(
    uow, etcd, clock, tmp_path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "private.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ring = keyring(uow, etcd, clock, bootstrap=path)
    await ring.maintain()
    assert list(uow.signing_keys.keys) == [key_id(key.public_key())]
    assert ring.signing_kid == key_id(key.public_key())


async def test_a_rotation_signs_with_the_new_key_and_keeps_the_old_one_published(
    uow, etcd, clock
) -> None:
    ring = keyring(uow, etcd, clock)
    await ring.maintain()
    old_kid = ring.signing_kid
    old_token, _ = ring.issue(uuid.uuid4(), Role.CUSTOMER)
    clock.advance(minutes=1)
    statuses = await ring.rotate()
    new_kid = ring.signing_kid
    assert new_kid != old_kid
    assert [(s.kid, s.signing) for s in statuses] == [(new_kid, True), (old_kid, False)]
    assert statuses[1].retired_at == clock.now
    assert statuses[1].removes_at == clock.now + POLICY.removal_delay
    assert published(etcd) == [new_kid, old_kid]
    assert verifies(etcd, old_token)  # its tokens keep verifying until they expire
    new_token, _ = ring.issue(uuid.uuid4(), Role.CUSTOMER)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert await ring.statuses() == statuses


async def test_a_retired_key_goes_once_its_last_token_expired(uow, etcd, clock) -> None:
    ring = keyring(uow, etcd, clock)
    await ring.maintain()
    old_kid = ring.signing_kid
    await ring.rotate()
    wait = await ring.maintain()
    assert wait is not None
    assert wait == pytest.approx(POLICY.removal_delay.total_seconds(), abs=0.1)
    clock.advance(seconds=wait)
    assert await ring.maintain() is None
    assert old_kid not in uow.signing_keys.keys
    assert published(etcd) == [ring.signing_kid]


async def test_publishing_writes_etcd_only_when_it_differs(uow, etcd, clock) -> None:
    ring = keyring(uow, etcd, clock)
    await ring.maintain()
    await ring.maintain()
    assert etcd.puts == 1
    etcd.values.clear()  # lost (or overwritten by hand): written again
    await ring.maintain()
    assert etcd.puts == 2


async def test_a_rotation_etcd_did_not_hear_of_is_not_committed(uow, etcd, clock) -> None:
    ring = keyring(uow, etcd, clock)
    await ring.maintain()
    before = dict(uow.signing_keys.keys)
    etcd.down = True
    with pytest.raises(Unavailable):
        await ring.rotate()
    # Verifiers never learnt of the new key, so no instance may sign with it.
    assert uow.signing_keys.keys == before
    assert ring.signing_kid in before


async def test_any_claims_are_signed_by_the_signing_key_and_verify_with_the_jwks(
    uow, etcd, clock
) -> None:
    ring = keyring(uow, etcd, clock)
    with pytest.raises(Unavailable):
        ring.sign({"sub": "x"})  # nothing loaded yet
    await ring.maintain()
    id_token = ring.sign({"iss": ISSUER, "aud": "shop-cli", "sub": "someone", "nonce": "n"})
    kid = jwt.get_unverified_header(id_token)["kid"]
    assert kid == ring.signing_kid
    key = parse_jwks(etcd.values[JWKS_KEY.encode()])[kid]
    claims = jwt.decode(id_token, key, algorithms=["RS256"], audience="shop-cli", issuer=ISSUER)
    assert (claims["sub"], claims["nonce"]) == ("someone", "n")
    await ring.rotate()
    assert jwt.get_unverified_header(ring.sign({"sub": "x"}))["kid"] == ring.signing_kid != kid

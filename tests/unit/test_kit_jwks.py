"""The JWKS document, a verifier whose key set changes, and the periodic task helper."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth.identity import Role
from shared.auth.jwks import jwk, jwks_document, parse_jwks
from shared.auth.keys import key_id
from shared.auth.tokens import TokenIssuer, TokenVerifier
from shared.errors import Unauthenticated
from shared.tasks import PeriodicTask
from tests.support.tokens import ISSUER


@pytest.fixture(scope="module")
def two_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def token(key: rsa.RSAPrivateKey, ttl: timedelta = timedelta(minutes=5)) -> str:
    return TokenIssuer(key, ISSUER, "shop", ttl).issue(uuid.uuid4(), Role.CUSTOMER)[0]


def test_jwks_is_a_standard_jwk_set_of_public_keys_only(two_keys) -> None:
    a, b = two_keys
    document = json.loads(jwks_document([a.public_key(), b.public_key()]))
    assert [k["kid"] for k in document["keys"]] == [key_id(a.public_key()), key_id(b.public_key())]
    for entry in document["keys"]:
        assert entry["kty"] == "RSA" and entry["alg"] == "RS256" and entry["use"] == "sig"
        assert {"n", "e"} <= entry.keys()
        assert not {"d", "p", "q", "dp", "dq", "qi"} & entry.keys()
    # Any JWKS client reads it: PyJWT's own parser agrees.
    assert {k.key_id for k in jwt.PyJWKSet.from_dict(document).keys} == {
        key_id(a.public_key()),
        key_id(b.public_key()),
    }


def test_parse_round_trips_and_the_keys_verify(two_keys) -> None:
    a, _ = two_keys
    keys = parse_jwks(jwks_document([a.public_key()]))
    verifier = TokenVerifier([], ISSUER, "shop")
    verifier.replace_keys(keys)
    assert verifier.verify(token(a)).role is Role.CUSTOMER


def test_parse_skips_what_it_cannot_use_and_refuses_what_is_not_a_set(two_keys) -> None:
    a, b = two_keys
    good = jwk(a.public_key())
    other_alg = jwk(b.public_key()) | {"alg": "RS512"}
    private = good | {"kid": "leaked", "d": "AQAB"}
    no_kid = {k: v for k, v in jwk(b.public_key()).items() if k != "kid"}
    raw = json.dumps({"keys": [good, other_alg, private, no_kid, "junk", {"kty": "EC"}]})
    assert list(parse_jwks(raw.encode())) == [good["kid"]]
    for bad in (b"not json", b"[]", b'{"keys": 3}', b"{}"):
        with pytest.raises(ValueError):
            parse_jwks(bad)


def test_a_token_is_refused_until_its_key_is_in_the_set(two_keys) -> None:
    a, _ = two_keys
    verifier = TokenVerifier([], ISSUER, "shop")
    signed = token(a)
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.verify(signed)
    verifier.replace_keys({key_id(a.public_key()): a.public_key()})
    assert verifier.verify(signed)


def test_a_cached_token_stops_verifying_when_its_key_leaves_the_set(two_keys) -> None:
    a, b = two_keys
    verifier = TokenVerifier([a.public_key(), b.public_key()], ISSUER, "shop")
    old, new = token(a), token(b)
    verifier.verify(old)
    verifier.verify(new)  # both cached as good
    verifier.replace_keys({key_id(b.public_key()): b.public_key()})
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.verify(old)
    assert verifier.verify(new)  # the other key's tokens are untouched
    assert verifier.kids == {key_id(b.public_key())}


async def test_periodic_task_runs_at_once_then_every_interval_and_survives_failures() -> None:
    calls: list[float] = []

    async def action() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 2:
            raise RuntimeError("the database is away")

    task = PeriodicTask("test", action, interval=0.05)
    task.start()
    await asyncio.sleep(0.3)
    await task.stop()
    assert len(calls) >= 4  # the failure did not end it
    assert task.rounds == len(calls)


async def test_periodic_task_wakes_early_and_honours_a_shorter_wanted_delay() -> None:
    calls = 0

    async def action() -> float:
        nonlocal calls
        calls += 1
        return 0.05 if calls == 1 else 60.0  # "a deadline falls due in 50 ms"

    task = PeriodicTask("test", action, interval=30.0, min_interval=0.01)
    task.start()
    await asyncio.sleep(0.2)
    assert calls == 2  # the second round came at the deadline, not after 30 s
    task.wake()
    await asyncio.sleep(0.05)
    assert calls == 3
    await task.stop()

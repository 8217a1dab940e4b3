"""The rotation rules (services/user/domain.py): which key signs, which are published,
when a retired key is removed. No I/O: keys are values, time is a parameter."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.user.domain import (
    MAX_CHECK_SECONDS,
    MAX_PUBLISHED_KEYS,
    MIN_CHECK_SECONDS,
    SigningKey,
    SigningKeyPolicy,
    new_signing_key,
    signing_key_from_pem,
)
from shared.auth.keys import key_id
from shared.errors import FailedPrecondition

T0 = datetime(2030, 1, 1, tzinfo=UTC)
TTL = timedelta(minutes=60)
LEEWAY = timedelta(seconds=30)
POLICY = SigningKeyPolicy(token_ttl=TTL, leeway=LEEWAY)


@pytest.fixture(scope="module")
def real_key() -> SigningKey:
    return new_signing_key(T0)


def key(kid: str, created: datetime, retired: datetime | None = None) -> SigningKey:
    """A key as a value: the rules never look at the PEM."""
    return SigningKey(kid, "-----BEGIN PRIVATE KEY-----", created, retired)


def test_a_generated_key_is_rsa_with_its_kid_from_the_public_half(real_key: SigningKey) -> None:
    assert real_key.kid == key_id(real_key.public_key())
    assert real_key.private_key().key_size == 2048
    assert real_key.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert real_key.retired_at is None


def test_an_imported_pem_keeps_its_kid(real_key: SigningKey) -> None:
    imported = signing_key_from_pem(real_key.private_key_pem.encode(), T0 + TTL)
    assert imported.kid == real_key.kid and imported.created_at == T0 + TTL


def test_a_pem_that_is_not_rsa_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ValueError, match="RSA"):
        signing_key_from_pem(pem, T0)


def test_the_newest_key_not_retired_signs() -> None:
    keys = [key("a", T0, retired=T0 + timedelta(1)), key("b", T0 + timedelta(1)), key("c", T0)]
    assert POLICY.signing_key(keys).kid == "b"


def test_with_every_key_retired_the_newest_still_signs() -> None:
    keys = [key("a", T0, T0), key("b", T0 + timedelta(seconds=1), T0 + timedelta(seconds=1))]
    assert POLICY.signing_key(keys).kid == "b"


def test_two_unretired_keys_of_the_same_moment_agree_on_one() -> None:
    # Every instance must pick the same one: the tie goes to the greater kid.
    assert POLICY.signing_key([key("a", T0), key("b", T0)]).kid == "b"
    assert POLICY.signing_key([key("b", T0), key("a", T0)]).kid == "b"


def test_no_key_at_all_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError):
        POLICY.signing_key([])


def test_rotation_makes_the_new_key_sign_and_retires_the_others_now() -> None:
    now = T0 + timedelta(hours=5)
    old = [key("a", T0)]
    new, retired = POLICY.rotate(old, key("b", T0), now)
    assert new.created_at == now and new.retired_at is None
    assert [(k.kid, k.retired_at) for k in retired] == [("a", now)]
    assert POLICY.signing_key([new, *retired]).kid == "b"


def test_rotation_leaves_keys_retired_earlier_as_they_were() -> None:
    earlier = T0 + timedelta(minutes=10)
    now = T0 + timedelta(minutes=20)
    keys = [key("a", T0, retired=earlier), key("b", earlier)]
    _, retired = POLICY.rotate(keys, key("c", now), now)
    assert [k.kid for k in retired] == ["b"]


def test_a_retired_key_is_published_until_the_longest_token_lifetime_plus_leeway() -> None:
    retired_at = T0 + timedelta(minutes=1)
    keys = [key("old", T0, retired=retired_at), key("new", retired_at)]
    removes_at = retired_at + TTL + LEEWAY
    assert POLICY.removes_at(keys[0]) == removes_at
    assert POLICY.removes_at(keys[1]) is None

    just_before = removes_at - timedelta(microseconds=1)
    assert [k.kid for k in POLICY.published(keys, just_before)] == ["new", "old"]
    assert POLICY.due_for_removal(keys, just_before) == []
    assert POLICY.next_removal(keys, just_before) == removes_at

    assert [k.kid for k in POLICY.published(keys, removes_at)] == ["new"]
    assert [k.kid for k in POLICY.due_for_removal(keys, removes_at)] == ["old"]


def test_a_token_signed_just_before_retirement_expires_before_its_key_goes() -> None:
    retired_at = T0 + timedelta(minutes=7)
    last_token_expires = retired_at + TTL  # signed at the last moment the key signed
    assert POLICY.removes_at(key("k", T0, retired_at)) == last_token_expires + LEEWAY
    assert POLICY.removes_at(key("k", T0, retired_at)) > last_token_expires  # type: ignore[operator]


def test_the_signing_key_is_never_removed_even_if_marked_retired_long_ago() -> None:
    only = [key("only", T0, retired=T0)]
    assert POLICY.due_for_removal(only, T0 + 10 * TTL) == []
    assert [k.kid for k in POLICY.published(only, T0 + 10 * TTL)] == ["only"]
    assert POLICY.next_removal(only, T0) is None


def test_published_keys_are_newest_first() -> None:
    keys = [
        key("a", T0, T0 + timedelta(seconds=2)),
        key("c", T0 + timedelta(seconds=2)),
        key("b", T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)),
    ]
    assert [k.kid for k in POLICY.published(keys, T0 + timedelta(seconds=3))] == ["c", "b", "a"]


def test_describe_says_which_signs_and_when_the_others_go() -> None:
    retired_at = T0 + timedelta(minutes=1)
    keys = [key("old", T0, retired=retired_at), key("new", retired_at)]
    statuses = POLICY.describe(keys, retired_at)
    assert [(s.kid, s.signing, s.removes_at) for s in statuses] == [
        ("new", True, None),
        ("old", False, retired_at + TTL + LEEWAY),
    ]
    assert not any(hasattr(s, "private_key_pem") for s in statuses)


def test_rotation_is_refused_while_too_many_keys_are_published() -> None:
    now = T0 + timedelta(minutes=1)
    keys = [key(f"k{i}", T0 + timedelta(seconds=i), retired=now) for i in range(MAX_PUBLISHED_KEYS)]
    with pytest.raises(FailedPrecondition, match="still published"):
        POLICY.rotate(keys, key("new", now), now)
    # Once the oldest have been removed, rotation is possible again.
    later = now + TTL + LEEWAY
    remaining = [k for k in keys if k not in POLICY.due_for_removal(keys, later)]
    new, _ = POLICY.rotate(remaining, key("new", later), later)
    assert new.kid == "new"


def test_rotation_to_a_kid_that_exists_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="exists"):
        POLICY.rotate([key("a", T0)], key("a", T0), T0)


@pytest.mark.parametrize(
    ("ttl_seconds", "interval"),
    [(3600, MAX_CHECK_SECONDS), (40, 10.0), (2, MIN_CHECK_SECONDS), (1, MIN_CHECK_SECONDS)],
)
def test_the_check_interval_is_a_quarter_of_the_ttl_within_bounds(
    ttl_seconds: int, interval: float
) -> None:
    policy = replace(POLICY, token_ttl=timedelta(seconds=ttl_seconds))
    assert policy.check_interval_seconds == interval

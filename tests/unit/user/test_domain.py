"""The user service's domain rules: email, password, hashing. No I/O."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from services.user.domain import (
    MAX_EMAIL,
    MAX_PASSWORD,
    MIN_PASSWORD,
    Passwords,
    new_password,
    new_user,
    normalise_email,
    offered_password,
)
from shared.auth.identity import Role
from shared.errors import InvalidArgument

# Cheap parameters keep the suite fast; the rules under test do not depend on cost.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(FAST)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice@example.com", "alice@example.com"),
        ("  Alice@Example.COM \n", "alice@example.com"),
        ("first.last+tag@mail.example.co.uk", "first.last+tag@mail.example.co.uk"),
    ],
)
def test_normalise_email_trims_and_lowercases(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "alice",
        "alice@",
        "@example.com",
        "alice@example",
        "alice@@example.com",
        "al ice@example.com",
        "alice@example..com",
        "alice@.example.com",
        "alice@example.com.",
        "a" * (MAX_EMAIL - len("@example.com") + 1) + "@example.com",
    ],
)
def test_normalise_email_rejects_bad_addresses(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalise_email(raw)
    assert caught.value.field == "email"


def test_email_of_exactly_max_length_is_accepted() -> None:
    email = "a" * (MAX_EMAIL - len("@example.com")) + "@example.com"
    assert normalise_email(email) == email


@pytest.mark.parametrize("length", [MIN_PASSWORD, MAX_PASSWORD])
def test_new_password_accepts_the_bounds(length: int) -> None:
    assert new_password("p" * length) == "p" * length


@pytest.mark.parametrize("raw", ["", "p" * (MIN_PASSWORD - 1), "p" * (MAX_PASSWORD + 1)])
def test_new_password_rejects_out_of_bounds(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        new_password(raw)
    assert caught.value.field == "password"


def test_new_password_keeps_surrounding_spaces() -> None:
    assert new_password("  secret pass  ") == "  secret pass  "


def test_offered_password_only_bounds_length() -> None:
    # A short guess must reach verification (and fail as wrong), not be reported as invalid.
    assert offered_password("short") == "short"
    for raw in ["", "p" * (MAX_PASSWORD + 1)]:
        with pytest.raises(InvalidArgument) as caught:
            offered_password(raw)
        assert caught.value.field == "password"


def test_new_user_is_a_customer_with_normalised_email() -> None:
    user = new_user(email=" Bob@Example.com", password_hash="$argon2id$x")
    assert user.email == "bob@example.com"
    assert user.role is Role.CUSTOMER
    assert user.created_at == user.updated_at
    assert user.created_at.tzinfo is not None


def test_new_user_validates_email() -> None:
    with pytest.raises(InvalidArgument):
        new_user(email="nope", password_hash="$argon2id$x")


def test_promotion_changes_only_role_and_updated_at() -> None:
    user = new_user(email="carol@example.com", password_hash="$argon2id$x")
    admin = user.promoted_to_admin()
    assert admin.role is Role.ADMIN
    assert (admin.user_id, admin.email, admin.password_hash, admin.created_at) == (
        user.user_id,
        user.email,
        user.password_hash,
        user.created_at,
    )
    assert admin.updated_at >= user.updated_at


def test_with_password_hash_replaces_the_hash() -> None:
    user = new_user(email="dave@example.com", password_hash="$argon2id$old")
    assert user.with_password_hash("$argon2id$new").password_hash == "$argon2id$new"


def test_hash_then_verify(passwords: Passwords) -> None:
    password_hash = passwords.hash("correct horse")
    assert password_hash.startswith("$argon2id$")
    assert "correct horse" not in password_hash
    assert passwords.verify(password_hash, "correct horse")
    assert not passwords.verify(password_hash, "wrong horse")


def test_hashes_are_salted(passwords: Passwords) -> None:
    assert passwords.hash("same password") != passwords.hash("same password")


def test_verify_of_a_corrupt_hash_is_false_not_an_error(passwords: Passwords) -> None:
    assert not passwords.verify("not-a-hash", "whatever1")
    assert not passwords.verify("$argon2id$v=19$m=8,t=1,p=1$garbage", "whatever1")


def test_decoy_never_matches(passwords: Passwords) -> None:
    assert not passwords.verify_decoy("")
    assert not passwords.verify_decoy("any password")


def test_needs_rehash_when_parameters_change(passwords: Passwords) -> None:
    weak = passwords.hash("correct horse")
    assert not passwords.needs_rehash(weak)
    stronger = Passwords(PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    assert stronger.needs_rehash(weak)
    assert stronger.verify(weak, "correct horse")  # old hashes still verify

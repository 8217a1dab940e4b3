"""The accounts' use cases on the fake unit of work: registering, logging in, reading an
account, the signing keys' RPCs and the first admin's bootstrap. No database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from argon2 import PasswordHasher

from services.user import use_cases
from services.user.domain import (
    MAX_EMAIL,
    MAX_PASSWORD,
    MIN_PASSWORD,
    Passwords,
    SigningKeyStatus,
    User,
    new_user,
)
from shared.auth.identity import Identity, Role
from shared.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from tests.unit.user.fakes import EXPIRES_AT, FakeSigningKeys, FakeUserUnitOfWork

# Cheap parameters keep the suite fast; the rules under test do not depend on cost.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
# What a hash from before a parameter change looks like: verifies, but needs a rehash.
OLDER = PasswordHasher(time_cost=2, memory_cost=8, parallelism=1)
PASSWORD = "alice-secret-1"


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(FAST)


@pytest.fixture
def uow() -> FakeUserUnitOfWork:
    return FakeUserUnitOfWork()


@pytest.fixture
def keys() -> FakeSigningKeys:
    return FakeSigningKeys()


async def register(
    uow: FakeUserUnitOfWork, passwords: Passwords, email: str, password: str = PASSWORD
) -> User:
    return await use_cases.register(uow, passwords, email=email, password=password)


async def login(
    uow: FakeUserUnitOfWork,
    passwords: Passwords,
    keys: FakeSigningKeys,
    email: str,
    password: str = PASSWORD,
) -> use_cases.Session:
    return await use_cases.login(uow, passwords, keys, email=email, password=password)


# --- Register ------------------------------------------------------------------------------------


async def test_register_makes_a_customer_with_the_normalised_email(uow, passwords) -> None:
    user = await register(uow, passwords, "  Bob@Example.COM ")
    assert (user.email, user.role) == ("bob@example.com", Role.CUSTOMER)
    assert uow.users.rows == {user.user_id: user}


async def test_register_stores_an_argon2_hash_never_the_password(uow, passwords) -> None:
    user = await register(uow, passwords, "carol@example.com", "plain-text-never")
    stored = uow.users.rows[user.user_id].password_hash
    assert stored.startswith("$argon2id$") and "plain-text-never" not in stored
    assert passwords.verify(stored, "plain-text-never")


async def test_an_email_has_one_account_whatever_its_case(uow, passwords) -> None:
    first = await register(uow, passwords, "dave@example.com")
    with pytest.raises(AlreadyExists):
        await register(uow, passwords, "DAVE@example.com ", "another-password")
    assert list(uow.users.rows.values()) == [first]


LONG_EMAIL = "a" * (MAX_EMAIL - len("@example.com") + 1) + "@example.com"


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [
        ("", PASSWORD, "email"),
        ("   ", PASSWORD, "email"),
        ("alice.example.com", PASSWORD, "email"),
        ("alice@localhost", PASSWORD, "email"),
        ("two@@example.com", PASSWORD, "email"),
        ("white space@example.com", PASSWORD, "email"),
        (LONG_EMAIL, PASSWORD, "email"),
        ("new@example.com", "", "password"),
        ("new@example.com", "p" * (MIN_PASSWORD - 1), "password"),
        ("new@example.com", "p" * (MAX_PASSWORD + 1), "password"),
    ],
)
async def test_register_refuses_bad_input_and_writes_nothing(
    uow, passwords, email, password, field
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await register(uow, passwords, email, password)
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}:")
    assert uow.users.rows == {} and uow.commits == 0


# --- Login ---------------------------------------------------------------------------------------


async def test_login_signs_a_token_for_the_account(uow, passwords, keys) -> None:
    alice = await register(uow, passwords, "alice@example.com")
    session = await login(uow, passwords, keys, "ALICE@example.com ")
    assert session.user == alice
    assert keys.issued == [(alice.user_id, Role.CUSTOMER)]
    assert session.access_token == f"token-for-{alice.user_id}-customer"
    assert session.expires_at == EXPIRES_AT


async def test_a_login_failure_does_not_say_which_part_was_wrong(uow, passwords, keys) -> None:
    await register(uow, passwords, "alice@example.com")
    failures = []
    for email, password in [
        ("alice@example.com", "wrong-password"),
        ("nobody@example.com", PASSWORD),
        ("alice@example.com", "x"),  # shorter than a new password may be: just wrong
    ]:
        with pytest.raises(Unauthenticated) as refused:
            await login(uow, passwords, keys, email, password)
        failures.append(str(refused.value))
    assert failures == [use_cases.BAD_CREDENTIALS] * 3
    assert keys.issued == []


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [
        ("", PASSWORD, "email"),
        ("not-an-email", PASSWORD, "email"),
        (LONG_EMAIL, PASSWORD, "email"),
        ("alice@example.com", "", "password"),
        ("alice@example.com", "p" * (MAX_PASSWORD + 1), "password"),
    ],
)
async def test_login_refuses_malformed_input(uow, passwords, keys, email, password, field) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await login(uow, passwords, keys, email, password)
    assert refused.value.field == field


async def test_login_rehashes_a_hash_made_with_older_parameters(uow, passwords, keys) -> None:
    legacy = new_user(email="legacy@example.com", password_hash=OLDER.hash(PASSWORD))
    uow.users.rows[legacy.user_id] = legacy
    await login(uow, passwords, keys, legacy.email)
    stored = uow.users.rows[legacy.user_id]
    assert stored.password_hash != legacy.password_hash
    assert not passwords.needs_rehash(stored.password_hash)
    assert passwords.verify(stored.password_hash, PASSWORD)
    assert stored.role is legacy.role
    await login(uow, passwords, keys, legacy.email)  # the new hash logs in too
    assert uow.users.rows[legacy.user_id] == stored  # and needs no second rehash


async def test_a_rehash_loses_to_a_hash_changed_meanwhile(passwords, keys) -> None:
    legacy = new_user(email="legacy@example.com", password_hash=OLDER.hash(PASSWORD))
    changed = legacy.with_password_hash(passwords.hash("a-new-password"))

    class ChangedMeanwhile(FakeUserUnitOfWork):
        """The password changes after the login read the row, before its rehash."""

        opened = 0

        def __call__(self) -> FakeUserUnitOfWork:
            self.opened += 1
            if self.opened == 2:  # the rehash's unit of work
                self.users.rows[legacy.user_id] = changed
            return self

    uow = ChangedMeanwhile()
    uow.users.rows[legacy.user_id] = legacy
    session = await login(uow, passwords, keys, legacy.email)
    assert session.user == legacy  # the login itself succeeds: the password was right
    assert uow.users.rows[legacy.user_id] == changed


async def test_an_admin_logs_in_with_an_admins_token(uow, passwords, keys) -> None:
    admin_id = await use_cases.ensure_admin(
        uow, passwords, email="root@example.com", password=PASSWORD
    )
    session = await login(uow, passwords, keys, "root@example.com")
    assert keys.issued == [(admin_id, Role.ADMIN)]
    assert session.user.role is Role.ADMIN


# --- GetUser -------------------------------------------------------------------------------------


async def test_a_customer_reads_their_own_account_an_admin_reads_any(uow, passwords) -> None:
    alice = await register(uow, passwords, "alice@example.com")
    own = Identity(alice.user_id, Role.CUSTOMER)
    admin = Identity(uuid.uuid4(), Role.ADMIN)
    assert await use_cases.get_user(uow, own, alice.user_id) == alice
    assert await use_cases.get_user(uow, admin, alice.user_id) == alice


async def test_a_customer_may_not_read_another_account_that_exists_or_not(uow, passwords) -> None:
    alice = await register(uow, passwords, "alice@example.com")
    stranger = Identity(uuid.uuid4(), Role.CUSTOMER)
    opened = uow.commits + uow.rollbacks
    for user_id in (alice.user_id, uuid.uuid4()):
        with pytest.raises(PermissionDenied):
            await use_cases.get_user(uow, stranger, user_id)
    assert uow.commits + uow.rollbacks == opened  # refused before any read


async def test_an_account_that_does_not_exist_is_not_found(uow) -> None:
    gone = uuid.uuid4()
    for caller in (Identity(uuid.uuid4(), Role.ADMIN), Identity(gone, Role.CUSTOMER)):
        with pytest.raises(NotFound):
            await use_cases.get_user(uow, caller, gone)


# --- RotateSigningKey, ListSigningKeys -----------------------------------------------------------


async def test_the_signing_key_rpcs_answer_what_the_keyring_says() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    status = SigningKeyStatus("k1", now, None, None, signing=True)
    keys = FakeSigningKeys([status])
    assert await use_cases.list_signing_keys(keys) == [status]
    assert keys.rotations == 0
    assert await use_cases.rotate_signing_key(keys) == [status]
    assert keys.rotations == 1


# --- the first admin -----------------------------------------------------------------------------


async def test_ensure_admin_creates_once_and_never_resets_the_password(uow, passwords) -> None:
    first = await use_cases.ensure_admin(
        uow, passwords, email="ROOT@example.com", password="root-password"
    )
    again = await use_cases.ensure_admin(
        uow, passwords, email="root@example.com", password="another-password"
    )
    assert again == first and len(uow.users.rows) == 1
    admin = uow.users.rows[first]
    assert (admin.email, admin.role) == ("root@example.com", Role.ADMIN)
    assert passwords.verify(admin.password_hash, "root-password")
    assert not passwords.verify(admin.password_hash, "another-password")
    assert uow.users.locked == ["root@example.com", "root@example.com"]


async def test_ensure_admin_promotes_a_customer_and_keeps_their_password(uow, passwords) -> None:
    customer = await register(uow, passwords, "promoted@example.com", "customer-password")
    promoted = await use_cases.ensure_admin(
        uow, passwords, email="promoted@example.com", password="ignored-password"
    )
    assert promoted == customer.user_id and len(uow.users.rows) == 1
    stored = uow.users.rows[promoted]
    assert stored.role is Role.ADMIN
    assert stored.password_hash == customer.password_hash


async def test_ensure_admin_promotes_an_account_registered_while_it_hashed(passwords) -> None:
    class RegisteredMeanwhile(FakeUserUnitOfWork):
        """Someone registers the email just before the admin's insert."""

        def __init__(self) -> None:
            super().__init__()
            self.opened = 0

        def __call__(self) -> FakeUserUnitOfWork:
            self.opened += 1
            if self.opened == 2:  # the insert's unit of work
                racer = new_user(email="twin@example.com", password_hash="$argon2id$racer")
                self.users.rows[racer.user_id] = racer
            return self

    uow = RegisteredMeanwhile()
    admin_id = await use_cases.ensure_admin(
        uow, passwords, email="twin@example.com", password="twin-password"
    )
    assert list(uow.users.rows) == [admin_id]
    assert uow.users.rows[admin_id].role is Role.ADMIN
    assert uow.users.rows[admin_id].password_hash == "$argon2id$racer"  # the racer's stays


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [("not-an-email", "root-password", "email"), ("root@example.com", "short", "password")],
)
async def test_ensure_admin_refuses_bad_input(uow, passwords, email, password, field) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await use_cases.ensure_admin(uow, passwords, email=email, password=password)
    assert refused.value.field == field
    assert uow.users.rows == {} and uow.commits == 0

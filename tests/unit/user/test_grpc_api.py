"""UserServicer on the fake unit of work, called directly (no server, no wire): requests
and replies mapped to and from the use cases, and the caller taken from the identity
the auth interceptor sets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher

from services.user.domain import Passwords, SigningKeyStatus
from services.user.grpc_api import UserServicer
from shared.auth.identity import Identity, Role, set_current_identity
from shared.errors import InvalidArgument, PermissionDenied
from shop.user.v1 import user_pb2 as pb
from tests.unit.user.fakes import EXPIRES_AT, FakeSigningKeys, FakeUserUnitOfWork

CONTEXT: Any = None  # the servicer never looks at it
NOW = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = [
    SigningKeyStatus("new", NOW, None, None, signing=True),
    SigningKeyStatus("old", NOW - timedelta(days=1), NOW, NOW + timedelta(hours=1), False),
]


@pytest.fixture
def uow() -> FakeUserUnitOfWork:
    return FakeUserUnitOfWork()


@pytest.fixture
def servicer(uow: FakeUserUnitOfWork) -> UserServicer:
    passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    return UserServicer(uow, FakeSigningKeys(STATUSES), passwords)


@pytest.fixture
def as_caller() -> Iterator[Any]:
    yield set_current_identity
    set_current_identity(None)


async def test_register_login_and_get_map_every_field(servicer, as_caller) -> None:
    registered = await servicer.Register(
        pb.RegisterRequest(email=" Alice@Example.com", password="alice-secret-1"), CONTEXT
    )
    user = registered.user
    assert (user.email, user.role) == ("alice@example.com", pb.ROLE_CUSTOMER)
    assert user.created_at.seconds > 0
    login = await servicer.Login(
        pb.LoginRequest(email="alice@example.com", password="alice-secret-1"), CONTEXT
    )
    assert login.user == user
    assert login.access_token == f"token-for-{user.user_id}-customer"
    assert login.expires_at.ToDatetime(tzinfo=UTC) == EXPIRES_AT
    as_caller(Identity(uuid.UUID(user.user_id), Role.CUSTOMER))
    got = await servicer.GetUser(pb.GetUserRequest(user_id=user.user_id), CONTEXT)
    assert got.user == user


async def test_get_user_asks_on_behalf_of_the_caller(servicer, as_caller) -> None:
    user = (
        await servicer.Register(
            pb.RegisterRequest(email="bob@example.com", password="bob-secret-1"), CONTEXT
        )
    ).user
    as_caller(Identity(uuid.uuid4(), Role.CUSTOMER))
    with pytest.raises(PermissionDenied):
        await servicer.GetUser(pb.GetUserRequest(user_id=user.user_id), CONTEXT)
    as_caller(Identity(uuid.uuid4(), Role.ADMIN))
    assert (await servicer.GetUser(pb.GetUserRequest(user_id=user.user_id), CONTEXT)).user == user


@pytest.mark.parametrize("user_id", ["", "not-a-uuid", "9" * 10_000, "-1"])
async def test_a_user_id_that_is_no_uuid_is_refused(servicer, as_caller, user_id) -> None:
    as_caller(Identity(uuid.uuid4(), Role.ADMIN))
    with pytest.raises(InvalidArgument) as refused:
        await servicer.GetUser(pb.GetUserRequest(user_id=user_id), CONTEXT)
    assert refused.value.field == "user_id"


async def test_signing_keys_map_to_proto_with_times_only_where_known(servicer) -> None:
    listed = await servicer.ListSigningKeys(pb.ListSigningKeysRequest(), CONTEXT)
    rotated = await servicer.RotateSigningKey(pb.RotateSigningKeyRequest(), CONTEXT)
    assert list(listed.keys) == list(rotated.keys)
    new, old = listed.keys
    assert (new.kid, new.signing, old.kid, old.signing) == ("new", True, "old", False)
    assert not new.HasField("retired_at") and not new.HasField("removes_at")
    assert old.retired_at.ToDatetime(tzinfo=UTC) == NOW
    assert old.removes_at.ToDatetime(tzinfo=UTC) == NOW + timedelta(hours=1)

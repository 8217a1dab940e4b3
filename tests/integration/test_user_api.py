"""UserService over gRPC against the real PostgreSQL and etcd of the test stack: what
only they prove (the unique email under concurrent writers, the SQL of a rehash and a
promotion, real tokens from the real keyring, statuses and the access policy on the
wire, the admin bootstrap's command line). The rules themselves are proven without
either in tests/unit/user/."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
import pytest_asyncio
from argon2 import PasswordHasher

from services.user.adapters.admin import ensure_admin
from services.user.main import SERVICE
from shared.auth.identity import Role
from shared.auth.keys import key_id, load_public_key
from shared.auth.tokens import TokenVerifier
from shared.settings import REPO_ROOT
from shop.user.v1 import user_pb2, user_pb2_grpc
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import AUDIENCE, ISSUER, TestKeys, bearer

pytestmark = pytest.mark.integration

Metadata = tuple[tuple[str, str], ...]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(stack, keys) -> AsyncIterator[RunningService]:
    await recreate_database(stack, "user")
    async with run_service(
        SERVICE, stack, keys, jwt_private_key_file=keys.private_key_file
    ) as running:
        yield running


@pytest.fixture
def stub(service: RunningService) -> user_pb2_grpc.UserServiceAsyncStub:
    return user_pb2_grpc.UserServiceStub(service.channel)


@dataclass(frozen=True)
class Account:
    user_id: str
    email: str
    password: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def alice(service: RunningService) -> Account:
    stub = user_pb2_grpc.UserServiceStub(service.channel)
    password = "alice-secret-1"
    reply = await stub.Register(
        user_pb2.RegisterRequest(email="alice@example.com", password=password)
    )
    return Account(reply.user.user_id, reply.user.email, password)


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def verifier(keys: TestKeys) -> TokenVerifier:
    return TokenVerifier([load_public_key(keys.public_key_file)], issuer=ISSUER, audience=AUDIENCE)


async def register(
    stub: user_pb2_grpc.UserServiceAsyncStub, email: str, password: str
) -> user_pb2.User:
    return (await stub.Register(user_pb2.RegisterRequest(email=email, password=password))).user


# --- Register ------------------------------------------------------------------------------------


async def test_concurrent_registrations_of_one_email_create_one_account(stub, service) -> None:
    email = unique_email("race")
    before = await service.count("users")
    outcomes = await asyncio.gather(
        *(register(stub, email, "race-password") for _ in range(4)), return_exceptions=True
    )
    created = [o for o in outcomes if isinstance(o, user_pb2.User)]
    failed = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert [f.code() for f in failed] == [grpc.StatusCode.ALREADY_EXISTS] * 3
    assert await service.count("users") == before + 1


# --- Login ---------------------------------------------------------------------------------------


async def test_login_token_is_accepted_by_the_verifier(stub, keys, alice) -> None:
    reply = await stub.Login(
        user_pb2.LoginRequest(email="ALICE@example.com ", password=alice.password)
    )
    assert reply.user.user_id == alice.user_id
    assert reply.user.role == user_pb2.ROLE_CUSTOMER

    identity = verifier(keys).verify(reply.access_token)
    assert str(identity.user_id) == alice.user_id
    assert identity.role is Role.CUSTOMER

    public_key = load_public_key(keys.public_key_file)
    header = jwt.get_unverified_header(reply.access_token)
    assert header["alg"] == "RS256"
    assert header["kid"] == key_id(public_key)
    claims = jwt.decode(
        reply.access_token,
        public_key,  # type: ignore[arg-type]
        algorithms=["RS256"],
        issuer=ISSUER,
        audience=AUDIENCE,
    )
    assert claims["sub"] == alice.user_id
    assert claims["role"] == "customer"
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["exp"] == reply.expires_at.seconds
    assert claims["exp"] - claims["iat"] == 3600  # token_ttl_seconds default


async def test_login_token_works_for_get_user(stub, alice) -> None:
    login = await stub.Login(user_pb2.LoginRequest(email=alice.email, password=alice.password))
    reply = await stub.GetUser(
        user_pb2.GetUserRequest(user_id=alice.user_id), metadata=bearer(login.access_token)
    )
    assert reply.user.user_id == alice.user_id
    assert reply.user.email == alice.email
    assert reply.user.role == user_pb2.ROLE_CUSTOMER
    assert reply.user.created_at == login.user.created_at


async def test_login_rehashes_a_hash_made_with_old_parameters(stub, service) -> None:
    email, password = unique_email("legacy"), "legacy-password"
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password)
    user_id = uuid.uuid4()
    conn = await asyncpg.connect(service.dsn)
    try:
        await conn.execute(
            "INSERT INTO users (user_id, email, password_hash, role) VALUES ($1,$2,$3,'customer')",
            user_id,
            email,
            weak,
        )
        reply = await stub.Login(user_pb2.LoginRequest(email=email, password=password))
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE user_id=$1", user_id)
    finally:
        await conn.close()
    assert reply.user.user_id == str(user_id)
    assert stored != weak
    current = PasswordHasher()
    assert not current.check_needs_rehash(stored)
    assert current.verify(stored, password)
    # And the new hash still logs in.
    await stub.Login(user_pb2.LoginRequest(email=email, password=password))


# --- the bad-input table, every RPC -------------------------------------------------------------

Request = Callable[[Account], Any]
Auth = Callable[[TestKeys, Account], Metadata | None]


def _no_auth(keys: TestKeys, alice: Account) -> Metadata | None:
    return None


def _admin(keys: TestKeys, alice: Account) -> Metadata | None:
    return bearer(keys.token(Role.ADMIN))


def _stranger(keys: TestKeys, alice: Account) -> Metadata | None:
    return bearer(keys.token(Role.CUSTOMER))


@dataclass(frozen=True)
class Case:
    rpc: str
    request: Request
    code: grpc.StatusCode
    auth: Auth = _no_auth
    field: str | None = None  # INVALID_ARGUMENT must name it


def reg(email: str, password: str = "good-password") -> Request:
    return lambda a: user_pb2.RegisterRequest(email=email, password=password)


def login(email: str | None = None, password: str | None = None) -> Request:
    return lambda a: user_pb2.LoginRequest(
        email=a.email if email is None else email,
        password=a.password if password is None else password,
    )


def get(user_id: str | None = None) -> Request:
    return lambda a: user_pb2.GetUserRequest(user_id=a.user_id if user_id is None else user_id)


INVALID = grpc.StatusCode.INVALID_ARGUMENT
UNKNOWN_ID = str(uuid.uuid4())

CASES = {
    # What the wire decides (tokens, the access policy, how a refusal travels: its status,
    # the field named first in its details) and the unique email. Each field's own checks
    # are proven in tests/unit/user/.
    "register-short-password": Case(
        "Register", reg("new2@example.com", "7-chars"), INVALID, field="password"
    ),
    "register-duplicate-email": Case(
        "Register",
        lambda a: user_pb2.RegisterRequest(email=a.email.upper(), password="good-password"),
        grpc.StatusCode.ALREADY_EXISTS,
    ),
    "login-wrong-password": Case(
        "Login", login(password="wrong-password"), grpc.StatusCode.UNAUTHENTICATED
    ),
    "get-unknown-id-as-admin": Case("GetUser", get(UNKNOWN_ID), grpc.StatusCode.NOT_FOUND, _admin),
    "get-missing-token": Case("GetUser", get(), grpc.StatusCode.UNAUTHENTICATED),
    "get-expired-token": Case(
        "GetUser",
        get(),
        grpc.StatusCode.UNAUTHENTICATED,
        lambda k, a: bearer(k.expired_token(Role.ADMIN)),
    ),
    "get-garbage-token": Case(
        "GetUser", get(), grpc.StatusCode.UNAUTHENTICATED, lambda k, a: bearer("not.a.jwt")
    ),
    "get-non-bearer-scheme": Case(
        "GetUser",
        get(),
        grpc.StatusCode.UNAUTHENTICATED,
        lambda k, a: (("authorization", "Basic abc"),),
    ),
    "get-another-customer": Case("GetUser", get(), grpc.StatusCode.PERMISSION_DENIED, _stranger),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_bad_input_is_rejected_and_writes_nothing(
    case: Case, stub, service, keys, alice
) -> None:
    before = await service.count("users")
    method = getattr(stub, case.rpc)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(case.request(alice), metadata=case.auth(keys, alice))
    assert caught.value.code() == case.code, caught.value.details()
    if case.field is not None:
        assert (caught.value.details() or "").startswith(f"{case.field}:")
    assert await service.count("users") == before


# --- bootstrapping the first admin ---------------------------------------------------------------


async def test_ensure_admin_promotes_an_existing_customer(stub, service, keys, alice) -> None:
    email, password = unique_email("promoted"), "customer-password"
    customer = await register(stub, email, password)
    before = await service.count("users")
    assert str(await ensure_admin(service.dsn, email, "ignored-password")) == customer.user_id
    assert await service.count("users") == before
    reply = await stub.Login(user_pb2.LoginRequest(email=email, password=password))
    assert reply.user.role == user_pb2.ROLE_ADMIN
    assert verifier(keys).verify(reply.access_token).role is Role.ADMIN
    # Its token is an admin's: it may read someone else's account.
    other = await stub.GetUser(
        user_pb2.GetUserRequest(user_id=alice.user_id), metadata=bearer(reply.access_token)
    )
    assert other.user.user_id == alice.user_id


async def test_concurrent_ensure_admin_creates_one_account(service) -> None:
    email = unique_email("twin")
    before = await service.count("users")
    ids = await asyncio.gather(
        *(ensure_admin(service.dsn, email, "twin-password") for _ in range(3))
    )
    assert len(set(ids)) == 1
    assert await service.count("users") == before + 1


async def _admin_cli(dsn: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.user.adapters.admin",
        *args,
        cwd=REPO_ROOT,
        env={**os.environ, "SHOP_USER_PG_DSN": dsn},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode().strip(), err.decode()


async def test_admin_cli_prints_the_same_id_each_run(service) -> None:
    email = unique_email("cli")
    before = await service.count("users")
    code, first, err = await _admin_cli(service.dsn, "--email", email, "--password", "cli-password")
    assert code == 0, err
    code, again, err = await _admin_cli(service.dsn, "--email", email, "--password", "cli-password")
    assert code == 0, err
    assert uuid.UUID(first) == uuid.UUID(again)
    assert await service.count("users") == before + 1


async def test_admin_cli_reports_bad_input(service) -> None:
    before = await service.count("users")
    code, out, err = await _admin_cli(service.dsn, "--email", "nope", "--password", "cli-password")
    assert code == 2
    assert "email" in err
    assert out == ""
    assert await service.count("users") == before

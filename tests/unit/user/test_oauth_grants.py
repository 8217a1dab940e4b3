"""The OAuth2 grants' steps (services/user/adapters/oauth/issuing.py) and the sign-in behind
the login page (use_cases.sign_in), on the fake unit of work: a code redeemed once, a replay
revoking what it gave, refresh-token rotation and reuse detection, machine tokens, revocation,
the sign-in limit. No database, no HTTP."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from argon2 import PasswordHasher

from services.user import use_cases
from services.user.adapters.oauth import issuing
from services.user.domain import (
    CODE_TTL,
    MAX_FAILURES_PER_EMAIL,
    OAuthClient,
    Passwords,
    User,
    new_user,
    secret_hash,
)
from shared.auth.identity import Role
from shared.errors import InvalidArgument, RateLimited, Unauthenticated
from tests.unit.user.fakes import FakeUserUnitOfWork, JwtKeys

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ISSUER = "https://shop.example"
CALLBACK = "http://127.0.0.1:8976/callback"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
LIFETIMES = issuing.Lifetimes(
    access=timedelta(minutes=15), refresh=timedelta(days=30), session=timedelta(hours=12)
)
CLI = OAuthClient(
    client_id="shop-cli",
    name="shop CLI",
    secret_hash=None,
    redirect_uris=(CALLBACK,),
    grant_types=frozenset({"authorization_code", "refresh_token"}),
    scopes=frozenset({"openid", "email", "orders:read", "orders:write", "catalog:admin"}),
)
MACHINE = OAuthClient(
    client_id="loadgen",
    name="loadgen",
    secret_hash=secret_hash("s" * 43),
    redirect_uris=(),
    grant_types=frozenset({"client_credentials"}),
    scopes=frozenset({"orders:read", "wallet:read", "catalog:admin"}),
)
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class CountingPasswords(Passwords):
    def __init__(self) -> None:
        super().__init__(FAST)
        self.verifies = 0

    def verify(self, password_hash: str, password: str) -> bool:
        self.verifies += 1
        return super().verify(password_hash, password)


@pytest.fixture
def uow() -> FakeUserUnitOfWork:
    return FakeUserUnitOfWork()


@pytest.fixture
def keys() -> JwtKeys:
    return JwtKeys()


@pytest.fixture
def alice(uow: FakeUserUnitOfWork) -> User:
    user = new_user(email="alice@example.com", password_hash=FAST.hash("alice-secret-1"))
    uow.users.rows[user.user_id] = user
    return user


async def code_for(uow, user: User, scopes: str = "openid email orders:read", **kw) -> str:
    code, _ = await issuing.issue_code(
        uow,
        CLI,
        user,
        requested=frozenset(scopes.split()),
        redirect_uri=CALLBACK,
        code_challenge=CHALLENGE,
        nonce=kw.get("nonce"),
        auth_time=NOW - timedelta(minutes=1),
        now=kw.get("now", NOW),
    )
    return code


async def exchange(uow, keys, code: str, *, client=CLI, redirect_uri=CALLBACK, now=NOW):
    return await issuing.redeem_code(
        uow,
        keys,
        client,
        code=code,
        redirect_uri=redirect_uri,
        lifetimes=LIFETIMES,
        issuer=ISSUER,
        now=now,
    )


async def rotate(uow, keys, token: str, scopes: str = "", now=NOW):
    return await issuing.refresh(
        uow,
        keys,
        CLI,
        refresh_token=token,
        requested=frozenset(scopes.split()),
        lifetimes=LIFETIMES,
        issuer=ISSUER,
        now=now,
    )


# --- codes -------------------------------------------------------------------------------------


async def test_a_code_is_stored_by_its_hash_for_what_the_person_may_grant(uow, alice) -> None:
    code = await code_for(uow, alice, "openid orders:read catalog:admin")
    assert code not in uow.oauth_codes.rows
    stored = uow.oauth_codes.rows[secret_hash(code)]
    assert stored.scopes == {"openid", "orders:read"}  # a customer cannot grant catalog:admin
    assert stored.expires_at == NOW + CODE_TTL and stored.used_at is None


async def test_a_code_gives_tokens_once(uow, keys, alice) -> None:
    code = await code_for(uow, alice, nonce="n-1")
    grant = await exchange(uow, keys, code)
    assert grant.scopes == {"openid", "email", "orders:read"}
    assert grant.refresh_token and grant.id_token
    claims = jwt.decode(grant.id_token, options={"verify_signature": False})
    assert claims["iss"] == ISSUER and claims["aud"] == "shop-cli"
    assert (claims["sub"], claims["nonce"], claims["email"]) == (
        str(alice.user_id),
        "n-1",
        "alice@example.com",
    )
    assert claims["auth_time"] == int((NOW - timedelta(minutes=1)).timestamp())
    assert keys.grants[-1]["scope"] == "email openid orders:read"
    stored = uow.oauth_codes.rows[secret_hash(code)]
    assert stored.used_at == NOW and stored.family_id is not None


async def test_no_id_token_without_openid(uow, keys, alice) -> None:
    grant = await exchange(uow, keys, await code_for(uow, alice, "orders:read"))
    assert grant.id_token is None and grant.scopes == {"orders:read"}


async def test_a_replayed_code_is_refused_and_revokes_what_it_gave(uow, keys, alice) -> None:
    code = await code_for(uow, alice)
    first = await exchange(uow, keys, code)
    with pytest.raises(issuing.InvalidGrant):
        await exchange(uow, keys, code, now=NOW + timedelta(seconds=5))
    # The revocation committed although the request failed.
    assert all(t.revoked_at is not None for t in uow.refresh_tokens.rows.values())
    with pytest.raises(issuing.InvalidGrant):
        await rotate(uow, keys, first.refresh_token or "")
    assert (
        await issuing.token_holder(uow, alice.user_id, issuing.jti_of(first.access_token)) is None
    )


@pytest.mark.parametrize(
    "attempt",
    [
        {"client": dataclasses.replace(CLI, client_id="other")},
        {"redirect_uri": "http://127.0.0.1:8976/other"},
        {"now": NOW + CODE_TTL},
    ],
    ids=["another-client", "another-redirect-uri", "expired"],
)
async def test_a_code_is_bound_to_its_client_redirect_uri_and_minute(uow, keys, alice, attempt):
    code = await code_for(uow, alice)
    with pytest.raises(issuing.InvalidGrant):
        await exchange(uow, keys, code, **attempt)
    assert uow.oauth_codes.rows[secret_hash(code)].used_at is None  # not burnt
    assert uow.refresh_tokens.rows == {}


async def test_an_unknown_code_is_invalid(uow, keys) -> None:
    with pytest.raises(issuing.InvalidGrant):
        await exchange(uow, keys, "never-issued")


# --- refresh tokens ----------------------------------------------------------------------------


async def test_a_refresh_token_rotates_within_its_family(uow, keys, alice) -> None:
    first = await exchange(uow, keys, await code_for(uow, alice))
    second = await rotate(uow, keys, first.refresh_token or "", "orders:read")
    assert second.refresh_token != first.refresh_token
    assert second.scopes == {"orders:read"} and second.id_token is None
    old = uow.refresh_tokens.rows[secret_hash(first.refresh_token or "")]
    new = uow.refresh_tokens.rows[secret_hash(second.refresh_token or "")]
    assert old.used_at == NOW and new.family_id == old.family_id and new.used_at is None
    assert new.access_jti == issuing.jti_of(second.access_token)


async def test_a_refresh_token_used_twice_revokes_the_whole_family(uow, keys, alice) -> None:
    first = await exchange(uow, keys, await code_for(uow, alice))
    second = await rotate(uow, keys, first.refresh_token or "")
    with pytest.raises(issuing.InvalidGrant):
        await rotate(uow, keys, first.refresh_token or "")  # the thief, or the victim
    with pytest.raises(issuing.InvalidGrant):
        await rotate(uow, keys, second.refresh_token or "")  # the newer one is dead too
    assert (
        await issuing.token_holder(uow, alice.user_id, issuing.jti_of(second.access_token)) is None
    )


async def test_a_refresh_cannot_widen_the_grant(uow, keys, alice) -> None:
    first = await exchange(uow, keys, await code_for(uow, alice, "openid orders:read"))
    with pytest.raises(InvalidArgument, match="scope"):
        await rotate(uow, keys, first.refresh_token or "", "orders:read orders:write")
    # A refused request does not use the token up.
    assert (await rotate(uow, keys, first.refresh_token or "")).scopes == {"openid", "orders:read"}


async def test_a_refresh_follows_the_persons_role(uow, keys) -> None:
    admin = new_user(email="root@example.com", password_hash=FAST.hash("x" * 10), role=Role.ADMIN)
    uow.users.rows[admin.user_id] = admin
    first = await exchange(uow, keys, await code_for(uow, admin, "openid catalog:admin"))
    assert first.scopes == {"openid", "catalog:admin"}
    uow.users.rows[admin.user_id] = dataclasses.replace(admin, role=Role.CUSTOMER)
    assert (await rotate(uow, keys, first.refresh_token or "")).scopes == {"openid"}


async def test_an_expired_refresh_token_is_invalid(uow, keys, alice) -> None:
    first = await exchange(uow, keys, await code_for(uow, alice))
    with pytest.raises(issuing.InvalidGrant):
        await rotate(uow, keys, first.refresh_token or "", now=NOW + LIFETIMES.refresh)


# --- machines, revocation ----------------------------------------------------------------------


def test_a_machine_gets_at_most_a_customers_scopes_and_a_subject_of_its_own(keys) -> None:
    grant = issuing.client_credentials(
        keys, MACHINE, requested=frozenset(), ttl=timedelta(minutes=15)
    )
    assert grant.scopes == {"orders:read", "wallet:read"}  # not catalog:admin
    assert grant.refresh_token is None and grant.id_token is None
    assert keys.grants[-1]["sub"] == str(uuid.uuid5(uuid.NAMESPACE_URL, "oauth-client:loadgen"))
    assert keys.grants[-1]["role"] == "customer"
    narrowed = issuing.client_credentials(
        keys, MACHINE, requested=frozenset({"orders:read"}), ttl=timedelta(minutes=15)
    )
    assert narrowed.scopes == {"orders:read"}


async def test_revoking_a_refresh_or_its_access_token_revokes_the_family(uow, keys, alice) -> None:
    first = await exchange(uow, keys, await code_for(uow, alice))
    assert not await issuing.revoke(
        uow, MACHINE, token=first.refresh_token or "", jti=None, now=NOW
    )
    assert await issuing.revoke(
        uow, CLI, token="whatever", jti=issuing.jti_of(first.access_token), now=NOW
    )
    assert all(t.revoked_at == NOW for t in uow.refresh_tokens.rows.values())
    second = await exchange(uow, keys, await code_for(uow, alice))
    assert await issuing.revoke(uow, CLI, token=second.refresh_token or "", jti=None, now=NOW)
    assert not await issuing.revoke(uow, CLI, token="never-issued", jti=None, now=NOW)


# --- signing in ----------------------------------------------------------------------------------


async def sign_in(
    uow, passwords, email="alice@example.com", password="alice-secret-1", ip="ip-1", now=NOW
):
    return await use_cases.sign_in(uow, passwords, email=email, password=password, ip=ip, now=now)


async def test_signing_in_opens_a_session_that_expires(uow, alice) -> None:
    passwords = CountingPasswords()
    user = await sign_in(uow, passwords, email=" ALICE@example.com")
    session = await use_cases.open_session(uow, user, ttl=timedelta(hours=1), now=NOW)
    assert secret_hash(session) in uow.login_sessions.rows
    assert await use_cases.signed_in(uow, session, NOW) == (alice, NOW)
    assert await use_cases.signed_in(uow, session, NOW + timedelta(hours=1)) is None
    assert await use_cases.signed_in(uow, "", NOW) is None
    assert await use_cases.signed_in(uow, "forged", NOW) is None


async def test_failures_are_counted_and_past_the_limit_no_password_is_checked(uow, alice) -> None:
    passwords = CountingPasswords()
    for _ in range(MAX_FAILURES_PER_EMAIL):
        with pytest.raises(Unauthenticated, match=use_cases.BAD_CREDENTIALS):
            await sign_in(uow, passwords, password="wrong-password")
    assert len(uow.login_attempts.rows) == MAX_FAILURES_PER_EMAIL
    checked = passwords.verifies
    with pytest.raises(RateLimited) as limited:
        await sign_in(uow, passwords)  # the right password, refused unread
    assert passwords.verifies == checked and limited.value.retry_after_ms > 0
    # Another account from another address is not held up; the window passes.
    assert await sign_in(uow, passwords, now=NOW + timedelta(minutes=16)) == alice


async def test_an_unknown_email_fails_the_same_way_and_counts(uow, alice) -> None:
    passwords = CountingPasswords()
    with pytest.raises(Unauthenticated, match=use_cases.BAD_CREDENTIALS):
        await sign_in(uow, passwords, email="nobody@example.com")
    assert uow.login_attempts.rows == [("nobody@example.com", "ip-1", NOW)]


async def test_failures_from_one_address_block_it_for_every_account(uow, alice) -> None:
    passwords = CountingPasswords()
    for n in range(20):
        with pytest.raises(Unauthenticated):
            await sign_in(uow, passwords, email=f"guess-{n}@example.com", ip="ip-9")
    with pytest.raises(RateLimited):
        await sign_in(uow, passwords, ip="ip-9")
    assert await sign_in(uow, passwords, ip="ip-10") == alice

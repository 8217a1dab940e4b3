"""Accounts' application layer: one function per RPC (and the first admin's bootstrap), and
one per step of the OAuth2 authorization server (adapters/oauth/ drives those), on the ports
of ports.py.

argon2 is slow on purpose: every hash and verify runs in a worker thread, and never
while a unit of work holds a connection.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.user.domain import (
    LOGIN_WINDOW,
    OAuthClient,
    Passwords,
    SigningKeyStatus,
    User,
    login_blocked,
    new_password,
    new_user,
    normalise_email,
    offered_password,
    secret_hash,
)
from services.user.ports import SigningKeys, UnitOfWorkFactory, UserUnitOfWork
from shared.auth.identity import Identity, Role
from shared.auth.tokens import TokenSigner
from shared.errors import (
    AlreadyExists,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)

__all__ = ["SigningKeys", "UnitOfWorkFactory", "UserUnitOfWork"]  # the ports, as before

# One message for both causes, so Login cannot be used to find out who has an account.
BAD_CREDENTIALS = "email or password is incorrect"


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    access_token: str
    expires_at: datetime


async def register(
    unit_of_work: UnitOfWorkFactory, passwords: Passwords, *, email: str, password: str
) -> User:
    """A customer's account; the email is one account's only."""
    email = normalise_email(email)
    password = new_password(password)
    password_hash = await asyncio.to_thread(passwords.hash, password)
    user = new_user(email=email, password_hash=password_hash)
    async with unit_of_work() as uow:
        await uow.users.add(user)
    return user


async def login(
    unit_of_work: UnitOfWorkFactory,
    passwords: Passwords,
    signer: TokenSigner,
    *,
    email: str,
    password: str,
) -> Session:
    """An access token for the right password. An unknown email costs a verify too, and
    fails the same way, so neither time nor answer tells who has an account."""
    user = await _authenticate(unit_of_work, passwords, normalise_email(email), password)
    token, expires_at = signer.issue(user.user_id, user.role)
    return Session(user, token, expires_at)


async def _authenticate(
    unit_of_work: UnitOfWorkFactory, passwords: Passwords, email: str, password: str
) -> User:
    password = offered_password(password)
    # The connection goes back to the pool before hashing: a verify takes far longer
    # than the query and must not hold one.
    async with unit_of_work() as uow:
        user = await uow.users.get_by_email(email)
    if user is None:
        await asyncio.to_thread(passwords.verify_decoy, password)
        raise Unauthenticated(BAD_CREDENTIALS)
    if not await asyncio.to_thread(passwords.verify, user.password_hash, password):
        raise Unauthenticated(BAD_CREDENTIALS)
    if passwords.needs_rehash(user.password_hash):
        await _rehash(unit_of_work, passwords, user, password)
    return user


async def _rehash(
    unit_of_work: UnitOfWorkFactory, passwords: Passwords, user: User, password: str
) -> None:
    """Upgrades a hash made with older parameters, now that the password is known. A
    hash changed meanwhile (a new password) wins: the write is a compare-and-set."""
    password_hash = await asyncio.to_thread(passwords.hash, password)
    async with unit_of_work() as uow:
        await uow.users.update_password_hash(
            user.with_password_hash(password_hash), expected_hash=user.password_hash
        )


async def get_user(unit_of_work: UnitOfWorkFactory, caller: Identity, user_id: uuid.UUID) -> User:
    """One's own account; an admin may read anyone's. Permission is decided before the
    read, so a customer cannot learn which ids exist."""
    if not caller.is_admin and caller.user_id != user_id:
        raise PermissionDenied("only admins may read another user's account")
    async with unit_of_work() as uow:
        user = await uow.users.get(user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


async def rotate_signing_key(keys: SigningKeys) -> list[SigningKeyStatus]:
    return await keys.rotate()


async def list_signing_keys(keys: SigningKeys) -> list[SigningKeyStatus]:
    return await keys.statuses()


async def ensure_admin(
    unit_of_work: UnitOfWorkFactory, passwords: Passwords, *, email: str, password: str
) -> uuid.UUID:
    """The id of the admin with this email: created if absent, promoted if a customer.

    There is no RPC that grants the admin role (an admin would be needed to call it),
    so the first one is made by this, run from the command line. Safe to repeat: it
    never duplicates or demotes, and an existing account keeps its password
    (``password`` is used only to create one).
    """
    email = normalise_email(email)
    password = new_password(password)
    existing = await _promote(unit_of_work, email)
    if existing is not None:
        return existing
    password_hash = await asyncio.to_thread(passwords.hash, password)
    admin = new_user(email=email, password_hash=password_hash, role=Role.ADMIN)
    try:
        async with unit_of_work() as uow:
            await uow.users.add(admin)
    except AlreadyExists:
        # Someone registered (or bootstrapped) this email while we hashed.
        raced = await _promote(unit_of_work, email)
        if raced is None:
            raise
        return raced
    return admin.user_id


async def _promote(unit_of_work: UnitOfWorkFactory, email: str) -> uuid.UUID | None:
    async with unit_of_work() as uow:
        user = await uow.users.get_by_email(email, for_update=True)
        if user is None:
            return None
        if user.role is not Role.ADMIN:
            await uow.users.update_role(user.promoted_to_admin())
        return user.user_id


# --- signing in to the OAuth2 authorization server (adapters/oauth/: its grants are there) -------


async def sign_in(
    unit_of_work: UnitOfWorkFactory,
    passwords: Passwords,
    *,
    email: str,
    password: str,
    ip: str,
    now: datetime,
) -> User:
    """The login page's check: Login's, behind a limit on failures per email and per IP
    (counted in the database, so every instance sees them). Past it no password is checked."""
    email = normalise_email(email)
    async with unit_of_work() as uow:
        failures = await uow.login_attempts.failures(email=email, ip=ip, since=now - LOGIN_WINDOW)
    if login_blocked(*failures):
        raise RateLimited("too many failed sign-ins", int(LOGIN_WINDOW.total_seconds() * 1000))
    try:
        return await _authenticate(unit_of_work, passwords, email, password)
    except Unauthenticated:
        async with unit_of_work() as uow:
            await uow.login_attempts.record_failure(email, ip, now)
        raise


async def open_session(
    unit_of_work: UnitOfWorkFactory, user: User, *, ttl: timedelta, now: datetime
) -> str:
    """The sign-in cookie's value; only its hash is stored."""
    session = secrets.token_urlsafe(32)
    async with unit_of_work() as uow:
        await uow.login_sessions.add(secret_hash(session), user.user_id, now, now + ttl)
    return session


async def sign_out(unit_of_work: UnitOfWorkFactory, session: str) -> None:
    """Ends the sign-in cookie's session: the next authorize asks for the password."""
    if session:
        async with unit_of_work() as uow:
            await uow.login_sessions.remove(secret_hash(session))


async def signed_in(
    unit_of_work: UnitOfWorkFactory, session: str, now: datetime
) -> tuple[User, datetime] | None:
    """Who the cookie signed in, and when; None if absent, unknown or expired."""
    if not session:
        return None
    async with unit_of_work() as uow:
        return await uow.login_sessions.get(secret_hash(session), now)


async def get_client(unit_of_work: UnitOfWorkFactory, client_id: str) -> OAuthClient | None:
    async with unit_of_work() as uow:
        return await uow.oauth_clients.get(client_id)


async def replace_clients(unit_of_work: UnitOfWorkFactory, clients: list[OAuthClient]) -> None:
    async with unit_of_work() as uow:
        await uow.oauth_clients.replace_all(clients)

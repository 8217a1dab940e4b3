"""The grants' state changes, each in one unit of work: codes issued and redeemed once,
refresh tokens rotated with reuse detection, machine tokens, revocation, userinfo.

The rules they apply are the domain's (``OAuthClient``, ``redeem``); grants.py calls these
from aioauth's grant types once aioauth has checked the request, the client and PKCE.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from services.user.domain import (
    CODE_TTL,
    AuthorizationCode,
    OAuthClient,
    RefreshToken,
    User,
    redeem,
    secret_hash,
)
from services.user.ports import SigningKeys, UnitOfWorkFactory, UserUnitOfWork
from shared.auth.identity import Role
from shared.auth.scopes import CUSTOMER_SCOPES, EMAIL, OIDC_SCOPES, OPENID, scopes_for
from shared.errors import FailedPrecondition, InvalidArgument


class InvalidGrant(FailedPrecondition):
    """The code or refresh token is unknown, expired, another client's, or used already."""


@dataclass(frozen=True, slots=True)
class Lifetimes:
    access: timedelta
    refresh: timedelta
    session: timedelta


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    expires_in: int
    scopes: frozenset[str]
    refresh_token: str | None = None
    id_token: str | None = None


def client_subject(client_id: str) -> uuid.UUID:
    """The ``sub`` of a machine client's tokens: stable, and never a person's id."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"oauth-client:{client_id}")


async def issue_code(
    unit_of_work: UnitOfWorkFactory,
    client: OAuthClient,
    user: User,
    *,
    requested: frozenset[str],
    redirect_uri: str,
    code_challenge: str,
    nonce: str | None,
    auth_time: datetime,
    now: datetime,
) -> tuple[str, frozenset[str]]:
    """A code for what this person may grant this client (CODE_TTL); its hash is stored."""
    code, granted = secrets.token_urlsafe(32), client.grantable(requested, user.role)
    stored = AuthorizationCode(
        hash=secret_hash(code),
        client_id=client.client_id,
        user_id=user.user_id,
        scopes=granted,
        auth_time=auth_time,
        expires_at=now + CODE_TTL,
        redirect_uri=redirect_uri,
        code_challenge=code_challenge,
        nonce=nonce,
    )
    async with unit_of_work() as uow:
        await uow.oauth_codes.add(stored)
    return code, granted


async def find_code(
    unit_of_work: UnitOfWorkFactory, client_id: str, code: str
) -> AuthorizationCode | None:
    """The code as stored, used or not, if it is this client's (for aioauth's PKCE check)."""
    async with unit_of_work() as uow:
        stored = await uow.oauth_codes.get(secret_hash(code))
    return stored if stored is not None and stored.client_id == client_id else None


async def redeem_code(
    unit_of_work: UnitOfWorkFactory,
    keys: SigningKeys,
    client: OAuthClient,
    *,
    code: str,
    redirect_uri: str,
    lifetimes: Lifetimes,
    issuer: str,
    now: datetime,
) -> TokenGrant:
    """Once, by its client, at its redirect URI (PKCE was checked by then). A code presented
    again revokes the refresh tokens it gave (RFC 6749 §4.1.2), and with them the access
    token issued beside them, as far as this server's endpoints go."""
    grant = None
    async with unit_of_work() as uow:
        stored = await uow.oauth_codes.get(secret_hash(code), for_update=True)
        verdict = redeem(stored, client.client_id, now)
        if stored is not None and verdict == "replay" and stored.family_id is not None:
            await uow.refresh_tokens.revoke_family(stored.family_id, now)
        elif stored is not None and verdict == "grant" and stored.redirect_uri == redirect_uri:
            family = uuid.uuid4()
            await uow.oauth_codes.mark_used(stored.hash, now, family)
            grant = await _grant(uow, keys, stored, family, stored.scopes, lifetimes, issuer, now)
    if grant is None:
        raise InvalidGrant("the code is invalid, expired, used, or not this client's")
    return grant


async def refresh(
    unit_of_work: UnitOfWorkFactory,
    keys: SigningKeys,
    client: OAuthClient,
    *,
    refresh_token: str,
    requested: frozenset[str],
    lifetimes: Lifetimes,
    issuer: str,
    now: datetime,
) -> TokenGrant:
    """Rotation: a new refresh token of the same family, the old one used up. One presented
    again (a stolen copy, or the thief's) revokes the family: both parties must sign in anew."""
    grant = None
    async with unit_of_work() as uow:
        stored = await uow.refresh_tokens.get(secret_hash(refresh_token), for_update=True)
        verdict = redeem(stored, client.client_id, now)
        family = stored.family_id if stored is not None else None
        if stored is not None and family is not None and verdict == "replay":
            await uow.refresh_tokens.revoke_family(family, now)
        elif stored is not None and family is not None and verdict == "grant":
            if not requested <= stored.scopes:
                raise InvalidArgument("scope", "asks for more than was granted")
            await uow.refresh_tokens.mark_used(stored.hash, now)
            scopes = requested or stored.scopes
            grant = await _grant(uow, keys, stored, family, scopes, lifetimes, issuer, now)
    if grant is None:
        raise InvalidGrant("the refresh token is invalid, expired, revoked or used")
    return grant


async def _grant(
    uow: UserUnitOfWork,
    keys: SigningKeys,
    given: AuthorizationCode | RefreshToken,
    family: uuid.UUID,
    requested: frozenset[str],
    lifetimes: Lifetimes,
    issuer: str,
    now: datetime,
) -> TokenGrant:
    """Access token, a refresh token of the family, and an ID token if ``openid`` is granted.
    The role is read again: a person demoted since keeps only what the new role allows."""
    user = await uow.users.get(given.user_id)
    if user is None:
        raise InvalidGrant("the account no longer exists")
    scopes = requested & (scopes_for(user.role) | OIDC_SCOPES)
    access, expires_at = keys.issue(
        user.user_id, user.role, scopes=scopes, client_id=given.client_id, ttl=lifetimes.access
    )
    token = secrets.token_urlsafe(32)
    await uow.refresh_tokens.add(
        RefreshToken(
            hash=secret_hash(token),
            client_id=given.client_id,
            user_id=user.user_id,
            scopes=scopes,
            auth_time=given.auth_time,
            expires_at=now + lifetimes.refresh,
            family_id=family,
            access_jti=jti_of(access),
        )
    )
    id_token = None
    if OPENID in scopes:
        claims: dict[str, str | int] = {
            "iss": issuer,
            "aud": given.client_id,
            "sub": str(user.user_id),
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "auth_time": int(given.auth_time.timestamp()),
        }
        if isinstance(given, AuthorizationCode) and given.nonce:
            claims["nonce"] = given.nonce
        if EMAIL in scopes:
            claims["email"] = user.email
        id_token = keys.sign(claims)
    expires_in = max(0, round((expires_at - now).total_seconds()))
    return TokenGrant(access, expires_in, scopes, token, id_token)


def client_credentials(
    keys: SigningKeys, client: OAuthClient, *, requested: frozenset[str], ttl: timedelta
) -> TokenGrant:
    """A machine's token: no person, so no more than a customer's scopes, no refresh token
    (RFC 6749 §4.4.3) and no ID token. Nothing requested: all the client was registered for."""
    scopes = (requested or client.scopes) & client.scopes & CUSTOMER_SCOPES
    access, _ = keys.issue(
        client_subject(client.client_id),
        Role.CUSTOMER,
        scopes=scopes,
        client_id=client.client_id,
        ttl=ttl,
    )
    return TokenGrant(access, round(ttl.total_seconds()), scopes)


def jti_of(access_token: str) -> str:
    """The id of a token this server signed (read without checking: it just made it)."""
    return str(jwt.decode(access_token, options={"verify_signature": False})["jti"])


async def revocable(
    unit_of_work: UnitOfWorkFactory, client: OAuthClient, *, token: str, jti: str | None
) -> RefreshToken | None:
    """The refresh token a revocation names: itself, or the one issued beside an access token
    (``jti``, once verified); None if unknown or another client's (RFC 7009 tells nothing)."""
    async with unit_of_work() as uow:
        stored = await uow.refresh_tokens.get(secret_hash(token))
        if stored is None and jti:
            stored = await uow.refresh_tokens.find_by_access_jti(jti)
    if stored is None or stored.client_id != client.client_id or stored.family_id is None:
        return None
    return stored


async def revoke(
    unit_of_work: UnitOfWorkFactory,
    client: OAuthClient,
    *,
    token: str,
    jti: str | None,
    now: datetime,
) -> bool:
    """RFC 7009: what ``revocable`` finds revokes its whole family. True if any was live."""
    stored = await revocable(unit_of_work, client, token=token, jti=jti)
    if stored is None or stored.family_id is None:
        return False
    async with unit_of_work() as uow:
        return await uow.refresh_tokens.revoke_family(stored.family_id, now) > 0


async def token_holder(
    unit_of_work: UnitOfWorkFactory, user_id: uuid.UUID, jti: str
) -> User | None:
    """The person a verified access token speaks for, unless its family was revoked since
    (this server's own check; the other services see the JWT only, valid until it expires)."""
    async with unit_of_work() as uow:
        linked = await uow.refresh_tokens.find_by_access_jti(jti)
        if linked is not None and linked.revoked_at is not None:
            return None
        return await uow.users.get(user_id)

"""The OAuth2 authorization server's tables over asyncpg (migrations/0003_oauth.sql): clients,
codes, refresh tokens, sign-in sessions and failed sign-ins. Every secret is looked up by
its SHA-256; the plain value is never stored."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.user.domain import AuthorizationCode, OAuthClient, RefreshToken, User
from services.user.persistence.accounts import USER_COLUMNS, user_from_row

_CLIENT = "client_id, name, secret_hash, redirect_uris, grant_types, scopes, first_party"
_CODE = (
    "code_hash, client_id, user_id, redirect_uri, scopes, code_challenge, nonce, auth_time,"
    " expires_at, used_at, family_id"
)
_TOKEN = (
    "token_hash, family_id, client_id, user_id, scopes, auth_time, access_jti, expires_at,"
    " used_at, revoked_at"
)


def _client(row: asyncpg.Record) -> OAuthClient:
    return OAuthClient(
        client_id=row["client_id"],
        name=row["name"],
        secret_hash=row["secret_hash"],
        redirect_uris=tuple(row["redirect_uris"]),
        grant_types=frozenset(row["grant_types"]),
        scopes=frozenset(row["scopes"]),
        first_party=row["first_party"],
    )


class PostgresOAuthClientRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def get(self, client_id: str) -> OAuthClient | None:
        row = await self._conn.fetchrow(
            f"SELECT {_CLIENT} FROM oauth_clients WHERE client_id = $1", client_id
        )
        return _client(row) if row else None

    async def replace_all(self, clients: Sequence[OAuthClient]) -> None:
        await self._conn.execute(
            "DELETE FROM oauth_clients WHERE NOT client_id = ANY($1::text[])",
            [c.client_id for c in clients],
        )
        await self._conn.executemany(
            f"INSERT INTO oauth_clients ({_CLIENT}) VALUES ($1,$2,$3,$4,$5,$6,$7)"
            " ON CONFLICT (client_id) DO UPDATE SET name=excluded.name,"
            " secret_hash=excluded.secret_hash, redirect_uris=excluded.redirect_uris,"
            " grant_types=excluded.grant_types, scopes=excluded.scopes,"
            " first_party=excluded.first_party, updated_at=now()",
            [
                (
                    c.client_id,
                    c.name,
                    c.secret_hash,
                    list(c.redirect_uris),
                    sorted(c.grant_types),
                    sorted(c.scopes),
                    c.first_party,
                )
                for c in clients
            ],
        )


def _code(row: asyncpg.Record) -> AuthorizationCode:
    return AuthorizationCode(
        hash=row["code_hash"],
        client_id=row["client_id"],
        user_id=row["user_id"],
        redirect_uri=row["redirect_uri"],
        scopes=frozenset(row["scopes"]),
        code_challenge=row["code_challenge"],
        nonce=row["nonce"],
        auth_time=row["auth_time"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
        family_id=row["family_id"],
    )


class PostgresAuthorizationCodeRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def add(self, code: AuthorizationCode) -> None:
        await self._conn.execute(
            f"INSERT INTO oauth_codes ({_CODE}, code_challenge_method, created_at)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,'S256',now())",
            code.hash,
            code.client_id,
            code.user_id,
            code.redirect_uri,
            sorted(code.scopes),
            code.code_challenge,
            code.nonce,
            code.auth_time,
            code.expires_at,
            code.used_at,
            code.family_id,
        )

    async def get(self, code_hash: str, *, for_update: bool = False) -> AuthorizationCode | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(
            f"SELECT {_CODE} FROM oauth_codes WHERE code_hash = $1{lock}", code_hash
        )
        return _code(row) if row else None

    async def mark_used(self, code_hash: str, at: datetime, family_id: uuid.UUID) -> None:
        await self._conn.execute(
            "UPDATE oauth_codes SET used_at = $2, family_id = $3 WHERE code_hash = $1",
            code_hash,
            at,
            family_id,
        )


def _token(row: asyncpg.Record) -> RefreshToken:
    return RefreshToken(
        hash=row["token_hash"],
        family_id=row["family_id"],
        client_id=row["client_id"],
        user_id=row["user_id"],
        scopes=frozenset(row["scopes"]),
        auth_time=row["auth_time"],
        access_jti=row["access_jti"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
        revoked_at=row["revoked_at"],
    )


class PostgresRefreshTokenRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def add(self, token: RefreshToken) -> None:
        await self._conn.execute(
            f"INSERT INTO oauth_refresh_tokens ({_TOKEN}, created_at)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,now())",
            token.hash,
            token.family_id,
            token.client_id,
            token.user_id,
            sorted(token.scopes),
            token.auth_time,
            token.access_jti,
            token.expires_at,
            token.used_at,
            token.revoked_at,
        )

    async def get(self, token_hash: str, *, for_update: bool = False) -> RefreshToken | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(
            f"SELECT {_TOKEN} FROM oauth_refresh_tokens WHERE token_hash = $1{lock}", token_hash
        )
        return _token(row) if row else None

    async def find_by_access_jti(self, jti: str) -> RefreshToken | None:
        row = await self._conn.fetchrow(
            f"SELECT {_TOKEN} FROM oauth_refresh_tokens WHERE access_jti = $1", jti
        )
        return _token(row) if row else None

    async def mark_used(self, token_hash: str, at: datetime) -> None:
        await self._conn.execute(
            "UPDATE oauth_refresh_tokens SET used_at = $2 WHERE token_hash = $1", token_hash, at
        )

    async def revoke_family(self, family_id: uuid.UUID, at: datetime) -> int:
        status = await self._conn.execute(
            "UPDATE oauth_refresh_tokens SET revoked_at = $2"
            " WHERE family_id = $1 AND revoked_at IS NULL",
            family_id,
            at,
        )
        return int(status.split()[-1])


class PostgresLoginSessionRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def add(
        self, session_hash: str, user_id: uuid.UUID, auth_time: datetime, expires_at: datetime
    ) -> None:
        await self._conn.execute(
            "INSERT INTO oauth_login_sessions (session_hash, user_id, auth_time, expires_at)"
            " VALUES ($1,$2,$3,$4)",
            session_hash,
            user_id,
            auth_time,
            expires_at,
        )

    async def get(self, session_hash: str, now: datetime) -> tuple[User, datetime] | None:
        columns = ", ".join(f"u.{c.strip()}" for c in USER_COLUMNS.split(","))
        row = await self._conn.fetchrow(
            f"SELECT {columns}, s.auth_time FROM oauth_login_sessions s"
            " JOIN users u USING (user_id) WHERE s.session_hash = $1 AND s.expires_at > $2",
            session_hash,
            now,
        )
        return (user_from_row(row), row["auth_time"]) if row else None

    async def remove(self, session_hash: str) -> None:
        await self._conn.execute(
            "DELETE FROM oauth_login_sessions WHERE session_hash = $1", session_hash
        )


class PostgresLoginAttemptRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def record_failure(self, email: str, ip: str, at: datetime) -> None:
        await self._conn.execute(
            "INSERT INTO login_attempts (email, ip, at) VALUES ($1,$2,$3)", email, ip, at
        )

    async def failures(self, *, email: str, ip: str, since: datetime) -> tuple[int, int]:
        row = await self._conn.fetchrow(
            "SELECT (SELECT count(*) FROM login_attempts WHERE email = $1 AND at > $3),"
            " (SELECT count(*) FROM login_attempts WHERE ip = $2 AND at > $3)",
            email,
            ip,
            since,
        )
        assert row is not None
        return int(row[0]), int(row[1])


async def purge_expired(pool: asyncpg.Pool, now: datetime, keep_attempts: timedelta) -> int:
    """Housekeeping: expired codes, sessions and refresh tokens, and failures older than the
    rate limit's window. Returns the rows deleted."""
    deleted = 0
    async with pool.acquire() as conn:
        for table, cutoff in (
            # A code is kept a day past its minute, so a replay still revokes what it gave.
            ("oauth_codes", now - timedelta(days=1)),
            ("oauth_login_sessions", now),
            ("oauth_refresh_tokens", now),
        ):
            status = await conn.execute(f"DELETE FROM {table} WHERE expires_at < $1", cutoff)
            deleted += int(status.split()[-1])
        status = await conn.execute("DELETE FROM login_attempts WHERE at < $1", now - keep_attempts)
        deleted += int(status.split()[-1])
    return deleted

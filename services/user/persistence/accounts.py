"""The accounts' and the signing keys' repositories over asyncpg."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.user.domain import SigningKey, User
from shared.auth.identity import Role
from shared.errors import AlreadyExists

USER_COLUMNS = "user_id, email, password_hash, role, created_at, updated_at"


def user_from_row(row: asyncpg.Record) -> User:
    return User(
        user_id=row["user_id"],
        email=row["email"],
        password_hash=row["password_hash"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PostgresUserRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def add(self, user: User) -> None:
        try:
            await self._conn.execute(
                f"INSERT INTO users ({USER_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6)",
                user.user_id,
                user.email,
                user.password_hash,
                user.role.value,
                user.created_at,
                user.updated_at,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"an account for {user.email} already exists") from None

    async def get(self, user_id: uuid.UUID) -> User | None:
        row = await self._conn.fetchrow(
            f"SELECT {USER_COLUMNS} FROM users WHERE user_id = $1", user_id
        )
        return user_from_row(row) if row else None

    async def get_by_email(self, email: str, *, for_update: bool = False) -> User | None:
        """``email`` must already be normalised: the column stores it that way."""
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(
            f"SELECT {USER_COLUMNS} FROM users WHERE email = $1{lock}", email
        )
        return user_from_row(row) if row else None

    async def update_password_hash(self, user: User, *, expected_hash: str) -> bool:
        """Compare-and-set, because a login's rehash reads outside any lock: a hash
        changed meanwhile wins. Only the hash is written, so a concurrent role
        change is never overwritten by the stale copy."""
        status = await self._conn.execute(
            "UPDATE users SET password_hash=$2, updated_at=$3"
            " WHERE user_id=$1 AND password_hash=$4",
            user.user_id,
            user.password_hash,
            user.updated_at,
            expected_hash,
        )
        return status == "UPDATE 1"

    async def update_role(self, user: User) -> None:
        await self._conn.execute(
            "UPDATE users SET role=$2, updated_at=$3 WHERE user_id=$1",
            user.user_id,
            user.role.value,
            user.updated_at,
        )


# Serialises every change to the key set and the JWKS written after it, across instances.
_SIGNING_KEYS_LOCK = 0x5161_4B45


def _signing_key(row: asyncpg.Record) -> SigningKey:
    return SigningKey(
        kid=row["kid"],
        private_key_pem=row["private_key_pem"],
        created_at=row["created_at"],
        retired_at=row["retired_at"],
    )


class PostgresSigningKeyRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def lock(self) -> None:
        """Held until the transaction ends: one instance at a time changes the keys and
        publishes them, so the last JWKS written always matches the committed table."""
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _SIGNING_KEYS_LOCK)

    async def all(self) -> list[SigningKey]:
        rows = await self._conn.fetch(
            "SELECT kid, private_key_pem, created_at, retired_at FROM signing_keys"
            " ORDER BY created_at DESC, kid DESC"
        )
        return [_signing_key(r) for r in rows]

    async def add(self, key: SigningKey) -> bool:
        """False if a key with this kid exists already (it is left as it is)."""
        status = await self._conn.execute(
            "INSERT INTO signing_keys (kid, private_key_pem, created_at, retired_at)"
            " VALUES ($1,$2,$3,$4) ON CONFLICT (kid) DO NOTHING",
            key.kid,
            key.private_key_pem,
            key.created_at,
            key.retired_at,
        )
        return bool(status == "INSERT 0 1")

    async def retire(self, kids: Sequence[str], at: datetime) -> None:
        await self._conn.execute(
            "UPDATE signing_keys SET retired_at = $2 WHERE kid = ANY($1) AND retired_at IS NULL",
            list(kids),
            at,
        )

    async def remove(self, kids: Sequence[str]) -> int:
        status = await self._conn.execute(
            "DELETE FROM signing_keys WHERE kid = ANY($1)", list(kids)
        )
        return int(status.split()[-1])

"""The user repository and unit of work over asyncpg."""

from __future__ import annotations

import uuid

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.user.domain import User
from shared.auth.identity import Role
from shared.db.unit_of_work import PostgresUnitOfWork
from shared.errors import AlreadyExists

_COLUMNS = "user_id, email, password_hash, role, created_at, updated_at"


def _user(row: asyncpg.Record) -> User:
    return User(
        user_id=row["user_id"],
        email=row["email"],
        password_hash=row["password_hash"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class UserRepository:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def add(self, user: User) -> None:
        try:
            await self._conn.execute(
                f"INSERT INTO users ({_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6)",
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
        row = await self._conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE user_id = $1", user_id)
        return _user(row) if row else None

    async def get_by_email(self, email: str, *, for_update: bool = False) -> User | None:
        """``email`` must already be normalised: the column stores it that way."""
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(
            f"SELECT {_COLUMNS} FROM users WHERE email = $1{lock}", email
        )
        return _user(row) if row else None

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


class UserUnitOfWork(PostgresUnitOfWork):
    users: UserRepository

    def bind(self, connection: PoolConnectionProxy) -> None:
        self.users = UserRepository(connection)

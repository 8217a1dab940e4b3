"""Browser sessions, in the gateway's database: any instance serves any session.

A session id is 256 random bits (``secrets.token_urlsafe(32)``), handed to the browser
once (in a cookie the storefront sets) and stored only as its SHA-256, so reading the
table, or a backup of it, gives no one a session. ``data`` is a JSON object: the tokens
of a signed-in user, a login in progress (the PKCE verifier and ``state``), the CSRF
secret. A session lives ``ttl`` from its last update (sliding); an expired one is never
returned, and ``purge_expired`` deletes them. ``rotate`` gives a session a new id with
the same data: call it when the user signs in, so an id planted before (fixation) is
worth nothing after.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

# 32 bytes of the OS's CSPRNG: 256 bits, 43 URL-safe characters.
ID_BYTES = 32


def new_session_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def id_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


@dataclass(frozen=True)
class Session:
    id: str
    expires_at: datetime
    data: dict[str, Any] = field(default_factory=dict)


class SessionStore(Protocol):
    async def create(self, data: Mapping[str, Any] | None = None) -> Session: ...
    async def get(self, session_id: str) -> Session | None: ...
    async def update(self, session_id: str, data: Mapping[str, Any]) -> Session | None: ...
    async def rotate(self, session_id: str) -> Session | None: ...
    async def delete(self, session_id: str) -> None: ...
    async def purge_expired(self) -> int: ...
    def refreshing(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """Held while one request refreshes the session's tokens, across instances: a
        refresh token is single-use, and two requests refreshing with the same one
        would look like theft to the authorization server (which then revokes the
        family and signs the person out)."""
        ...


class PostgresSessionStore:
    def __init__(self, pool: asyncpg.Pool, ttl: timedelta) -> None:
        self._pool = pool
        self._ttl = ttl

    async def create(self, data: Mapping[str, Any] | None = None) -> Session:
        session_id = new_session_id()
        expires_at = await self._pool.fetchval(
            "INSERT INTO sessions (id_hash, data, expires_at) VALUES ($1, $2::jsonb, now() + $3)"
            " RETURNING expires_at",
            id_hash(session_id),
            json.dumps(dict(data or {})),
            self._ttl,
        )
        return Session(session_id, expires_at, dict(data or {}))

    async def get(self, session_id: str) -> Session | None:
        if not session_id:
            return None
        row = await self._pool.fetchrow(
            "SELECT data, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > now()",
            id_hash(session_id),
        )
        if row is None:
            return None
        return Session(session_id, row["expires_at"], json.loads(row["data"]))

    async def update(self, session_id: str, data: Mapping[str, Any]) -> Session | None:
        """Replaces the data and extends the session by ``ttl``; None if it expired."""
        expires_at = await self._pool.fetchval(
            "UPDATE sessions SET data = $2::jsonb, updated_at = now(), expires_at = now() + $3"
            " WHERE id_hash = $1 AND expires_at > now() RETURNING expires_at",
            id_hash(session_id),
            json.dumps(dict(data)),
            self._ttl,
        )
        return None if expires_at is None else Session(session_id, expires_at, dict(data))

    async def rotate(self, session_id: str) -> Session | None:
        new_id = new_session_id()
        row = await self._pool.fetchrow(
            "UPDATE sessions SET id_hash = $2, updated_at = now(), expires_at = now() + $3"
            " WHERE id_hash = $1 AND expires_at > now() RETURNING data, expires_at",
            id_hash(session_id),
            id_hash(new_id),
            self._ttl,
        )
        if row is None:
            return None
        return Session(new_id, row["expires_at"], json.loads(row["data"]))

    async def delete(self, session_id: str) -> None:
        await self._pool.execute("DELETE FROM sessions WHERE id_hash = $1", id_hash(session_id))

    @asynccontextmanager
    async def refreshing(self, session_id: str) -> AsyncIterator[None]:
        key = int.from_bytes(id_hash(session_id)[:8], "big", signed=True)
        async with self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def purge_expired(self) -> int:
        status: str = await self._pool.execute("DELETE FROM sessions WHERE expires_at <= now()")
        return int(status.rpartition(" ")[2])

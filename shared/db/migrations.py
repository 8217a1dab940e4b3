"""Applies a service's numbered SQL files, once each, in order.

Why not Alembic or yoyo: both need a second, synchronous driver (SQLAlchemy or
psycopg) beside asyncpg, and our migrations are plain SQL files. This is the
whole mechanism: a table of applied versions, and an advisory lock so that
replicas starting together apply each file exactly once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

_LOCK_KEY = 0x5E0F_5E0F  # any constant shared by every instance of a service


def pending_files(directory: Path, applied: set[str]) -> list[Path]:
    return [p for p in sorted(directory.glob("*.sql")) if p.stem not in applied]


async def apply_migrations(dsn: str, directory: Path) -> list[str]:
    """Returns the versions applied by this call (empty when up to date)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        done: list[str] = []
        for path in pending_files(directory, applied):
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
            log.info("applied migration %s", path.name)
            done.append(path.stem)
        return done
    finally:
        await conn.close()

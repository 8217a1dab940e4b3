"""Connection pools."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from shared.settings import ServiceSettings


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does (roll back a
    transaction left open, drop listeners). Its default also sends ``RESET ALL``,
    ``UNLISTEN *``, ``CLOSE ALL`` and an advisory unlock, a round trip per release that
    buys nothing here: no code sets session state on a pool connection (listeners open
    their own connections, advisory locks are transaction-scoped)."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=30, reset=_keep_session
    )
    if pool is None:  # only when a pool is created with no connections at all
        raise RuntimeError("asyncpg returned no pool")
    return pool


@contextlib.asynccontextmanager
async def service_pool(settings: ServiceSettings) -> AsyncIterator[asyncpg.Pool]:
    """The service's own database pool, sized by its settings, closed on exit."""
    pool = await create_pool(
        settings.pg_dsn, min_size=settings.pg_pool_min_size, max_size=settings.pg_pool_max_size
    )
    try:
        yield pool
    finally:
        await pool.close()

"""Connection pools."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from shared.settings import ServiceSettings


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    # asyncpg's reset on release (RESET ALL, UNLISTEN *, ...) costs a round trip, and it
    # stays: it is also what finds a connection that PostgreSQL's restart cut mid-statement
    # and drops it; skipped, such a connection came back to the pool and failed the next
    # caller with INTERNAL (seen under `make chaos` when it was tried).
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30)
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

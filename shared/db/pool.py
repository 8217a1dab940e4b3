"""Connection pools."""

from __future__ import annotations

import asyncpg


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30)
    if pool is None:  # only when a pool is created with no connections at all
        raise RuntimeError("asyncpg returned no pool")
    return pool

"""Is the service's database there? The question behind an instance's readiness.

The probe keeps one connection of its own, outside the pool, so a pool that is
merely busy is not mistaken for an outage, and a lost connection is opened
again on the next check: the answer comes back by itself when the database does.
"""

from __future__ import annotations

import contextlib

import asyncpg

# A check that takes longer than this counts as a failure: an instance whose database
# answers this slowly cannot serve its RPCs within their deadlines either.
CHECK_TIMEOUT_SECONDS = 1.0


class DatabaseProbe:
    def __init__(self, dsn: str, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None

    async def check(self) -> bool:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
            await self._conn.fetchval("SELECT 1", timeout=self._timeout)
            return True
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await self.close()
            return False

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=self._timeout)

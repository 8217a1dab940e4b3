"""One connection LISTENing on a PostgreSQL channel, kept listening.

A notification is heard only while the connection is up, so the owner is told when
listening begins (again) and when it stops: whatever was announced in between went
unheard, and only the owner knows what that costs (the order watches re-read, the
catalog cache forgets). The connection is its own, never a pooled one (a pool's reset
would UNLISTEN it), named in ``pg_stat_activity``, and proves it is alive with a
``SELECT 1`` every ``check_seconds``, so a connection lost without a word is noticed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from shared.tasks import PeriodicTask

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0
# What a lost or unreachable database looks like from here.
LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _nothing() -> None:
    pass


class Listener:
    def __init__(
        self,
        dsn: str,
        channel: str,
        on_notify: Callable[[str], None],
        *,
        name: str,
        on_listening: Callable[[], None] = _nothing,
        on_lost: Callable[[], None] = _nothing,
        check_seconds: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_notify = on_notify
        self.name = name  # also the connection's application_name
        self._on_listening = on_listening
        self._on_lost = on_lost
        self._conn: asyncpg.Connection | None = None
        self._checks = PeriodicTask(f"{name}: keep listening", self._keep, interval=check_seconds)

    @property
    def connection(self) -> asyncpg.Connection | None:
        return self._conn

    async def listen(self) -> None:
        """Connects and LISTENs now; raises if the database cannot be reached."""
        conn = await asyncpg.connect(
            self._dsn, timeout=CHECK_TIMEOUT, server_settings={"application_name": self.name}
        )
        try:
            conn.add_termination_listener(self._terminated)
            await conn.add_listener(self._channel, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._on_listening()

    def start(self) -> None:
        """Keeps it listening from now on (the first round connects if ``listen`` did not)."""
        self._checks.start()

    async def stop(self) -> None:
        await self._checks.stop()
        conn, self._conn = self._conn, None
        await self._close(conn)

    async def _keep(self) -> None:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            try:
                await conn.fetchval("SELECT 1", timeout=CHECK_TIMEOUT)
                return
            except LOST:
                pass
        await self._drop()
        try:
            await self.listen()
        except LOST as error:
            log.warning("%s cannot listen (%s); retrying", self.name, error)
            return
        log.info("%s listening on %s", self.name, self._channel)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._on_lost()
            await self._close(conn)

    def _terminated(self, conn: object) -> None:
        if conn is not self._conn:  # one this class closed itself, already replaced
            return
        self._conn = None
        log.warning("%s lost its connection; listening again", self.name)
        self._on_lost()
        self._checks.wake()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._on_notify(str(payload))

    @staticmethod
    async def _close(conn: asyncpg.Connection | None) -> None:
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), CHECK_TIMEOUT)

"""The outbox backlog over time: unpublished rows in each service's outbox, every 0.5 s.

``outbox`` (shared/messaging/migrations) holds an event from the commit of the change
it announces until the relay has published it (``sent_at`` set), so its unsent rows
are the events a broker outage (or a slow relay) is holding back. A sample that cannot
be taken (PostgreSQL is down) is recorded as None: a gap, not a zero.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

INTERVAL = 0.5
CONNECT_TIMEOUT = 1.0
UNSENT = "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
# What a sample taken while PostgreSQL goes down or comes back can end in: a gap. (asyncpg
# raised InternalClientError, "cannot switch to state", on a connection the restart cut.)
UNSAMPLED = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@dataclass
class OutboxSampler:
    dsns: Mapping[str, str]  # service -> DSN of a database with an outbox
    # (loop time, service, unsent rows or None)
    samples: list[tuple[float, str, int | None]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    # One connection per database, kept between samples: a login is a TLS handshake and
    # a SCRAM exchange (about 15 ms of CPU on both ends), which six times a second would
    # load the very system under measurement. Dropped on any failure, made again next time.
    _conns: dict[str, asyncpg.Connection] = field(default_factory=dict)

    async def _count(self, service: str, dsn: str) -> int | None:
        conn = self._conns.get(service)
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
                self._conns[service] = conn
            return int(await conn.fetchval(UNSENT, timeout=CONNECT_TIMEOUT))
        except UNSAMPLED:
            await self._drop(service)
            return None

    async def _drop(self, service: str) -> None:
        conn = self._conns.pop(service, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=CONNECT_TIMEOUT)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            counts = await asyncio.gather(*(self._count(s, d) for s, d in self.dsns.items()))
            self.samples.extend((now, s, n) for s, n in zip(self.dsns, counts, strict=True))
            await asyncio.sleep(max(0.0, now + INTERVAL - loop.time()))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for service in list(self._conns):
            await self._drop(service)

    def peaks(self) -> dict[str, int | None]:
        """The most unsent rows seen per service, and in all (the largest sum of one round)."""
        per: dict[str, int | None] = {s: None for s in self.dsns}
        rounds: dict[float, int] = {}
        for at, service, n in self.samples:
            if n is None:
                continue
            seen = per[service]
            per[service] = n if seen is None else max(seen, n)
            rounds[at] = rounds.get(at, 0) + n
        return per | {"total": max(rounds.values()) if rounds else None}

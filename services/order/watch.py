"""WatchOrder's wake-ups: one LISTEN connection per instance, fanned out to watchers.

A trigger on ``orders`` NOTIFYs ``order_status`` with the order id whenever a
status changes, on commit, whoever changed it: this instance, another one, or
an event handler. So a watcher on any instance hears every change without
polling. Notifications can still be missed (the listener reconnects), which is
why a watcher also re-reads on a slow timer: the hub only says *when* to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator

import asyncpg

from shared.errors import Unavailable

log = logging.getLogger(__name__)

CHANNEL = "order_status"
RECONNECT_CHECK_SECONDS = 1.0


class ShuttingDown(Unavailable):
    """This instance is stopping; the client should call again (another instance answers)."""

    reason = "SHUTTING_DOWN"


class Watch:
    """One watcher of one order; woken by the hub when that order may have changed."""

    def __init__(self, hub: OrderStatusHub, order_id: uuid.UUID) -> None:
        self._hub = hub
        self.order_id = order_id
        self._changed = asyncio.Event()

    def wake(self) -> None:
        self._changed.set()

    async def wait(self, timeout: float) -> None:
        """Returns once the order may have changed, or after ``timeout`` anyway.

        Raises ShuttingDown when the hub closes, so the stream ends at once
        instead of holding up the server's graceful stop.
        """
        self._raise_if_closed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()
        self._raise_if_closed()

    def _raise_if_closed(self) -> None:
        if self._hub.closed:
            raise ShuttingDown(
                f"this order service instance is shutting down; reconnect to keep watching "
                f"order {self.order_id}"
            )


class OrderStatusHub:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn  # the LISTEN connection is its own, never a pooled one
        self._conn: asyncpg.Connection | None = None
        self._watches: dict[str, set[Watch]] = {}
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def watcher_count(self) -> int:
        return sum(len(watches) for watches in self._watches.values())

    async def start(self) -> None:
        await self._connect()  # at start-up, a database we cannot reach is an error
        self._task = asyncio.create_task(self._keep_listening(), name="order status hub")

    async def close(self) -> None:
        """Ends every watch (ShuttingDown) and stops listening; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._wake_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    @contextlib.contextmanager
    def watch(self, order_id: uuid.UUID) -> Iterator[Watch]:
        watch = Watch(self, order_id)
        watch._raise_if_closed()
        key = str(order_id)
        self._watches.setdefault(key, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(key)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[key]

    def wake(self, order_id: str) -> None:
        """Wakes the watchers of one order (``order_id`` as PostgreSQL prints a uuid)."""
        for watch in self._watches.get(order_id, ()):
            watch.wake()

    def _wake_all(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.wake()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.wake(str(payload))

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None

    async def _keep_listening(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_CHECK_SECONDS)
            if self._conn is not None and not self._conn.is_closed():
                continue
            try:
                await self._disconnect()
                await self._connect()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("order status listener cannot reconnect (%s); retrying", exc)
                continue
            log.info("order status listener reconnected")
            # Changes made while it was away were not heard: have everyone re-read.
            self._wake_all()

"""WatchOrder's wake-ups: one LISTEN connection per instance, fanned out to watchers.

A trigger on ``orders`` NOTIFYs ``order_status`` with the order id whenever its
status or saga step changes, on commit, whoever changed it: this instance, another
one, or an event handler. So a watcher on any instance hears every change without
polling. Notifications can still be missed (the listener reconnects), which is
why a watcher also re-reads on a slow timer: the hub only says *when* to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator

from shared.db.listener import Listener
from shared.errors import Unavailable
from shop.common.v1.error_reason_pb2 import ErrorReason

CHANNEL = "order_status"
RECONNECT_CHECK_SECONDS = 1.0


class ShuttingDown(Unavailable):
    """This instance is stopping; the client should call again (another instance answers)."""

    reason = ErrorReason.ERROR_REASON_SHUTTING_DOWN


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
        # Changes made while it was away were not heard: on listening (again) everyone
        # re-reads.
        self.listener = Listener(
            dsn,
            CHANNEL,
            self.wake,
            name="order status listener",
            on_listening=self._wake_all,
            check_seconds=RECONNECT_CHECK_SECONDS,
        )
        self._watches: dict[str, set[Watch]] = {}
        self.closed = False

    @property
    def watcher_count(self) -> int:
        return sum(len(watches) for watches in self._watches.values())

    async def start(self) -> None:
        await self.listener.listen()  # at start-up, a database we cannot reach is an error
        self.listener.start()

    async def close(self) -> None:
        """Ends every watch (ShuttingDown) and stops listening; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._wake_all()
        await self.listener.stop()

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

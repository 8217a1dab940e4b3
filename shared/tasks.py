"""Background work that repeats: one small helper instead of a loop per feature.

``PeriodicTask`` runs an async action every ``interval`` seconds until stopped.
A failure is logged and the next round still comes (a database outage must not
end the work for good); ``wake()`` runs the next round now instead of at the
end of the interval. The action may return how soon it wants to run again
(a deadline it knows about), which shortens that one wait, never below
``min_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Action = Callable[[], Awaitable[float | None]]

# How long a cancelled task gets before it is cancelled again.
CANCEL_RETRY_SECONDS = 1.0


async def cancel_and_wait(task: asyncio.Task[object]) -> None:
    """Cancels ``task`` and returns once it has ended, whatever it raised.

    One cancel is not always enough on Python 3.11: ``asyncio.wait_for`` (aetcd's watch
    set-up uses it) swallows a cancellation that arrives as its inner future completes,
    and the task then goes on to wait for good (a test's teardown in CI hung 300 s on a
    service directory's watch). So the cancel is repeated until the task is done."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_RETRY_SECONDS)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()


class PeriodicTask:
    def __init__(
        self, name: str, action: Action, *, interval: float, min_interval: float = 0.2
    ) -> None:
        if interval <= 0 or min_interval <= 0:
            raise ValueError("intervals must be positive")
        self.name = name
        self._action = action
        self._interval = interval
        self._min_interval = min(min_interval, interval)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # completed rounds, failed or not

    @property
    def interval(self) -> float:
        return self._interval

    def start(self) -> None:
        """Starts the loop; the first round runs at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        """Runs the next round now (or right after the one in progress)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            delay = self._interval
            try:
                wanted = await self._action()
                if wanted is not None:
                    delay = max(self._min_interval, min(delay, wanted))
            except Exception:
                log.exception("%s failed; trying again in %.1fs", self.name, delay)
            self.rounds += 1
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # arrives as the event is set, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

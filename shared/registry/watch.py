"""Following a key range of etcd: list it once, then watch from the next revision.

The registry's service directory and the JWKS watch both need this. A broken
watch (etcd restart, compaction, a dropped stream) keeps whatever the follower
already has and lists again after a short pause, so a reader is never left
with nothing, only, for a moment, with something stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aetcd
from aetcd import rtypes
from aetcd.utils import prefix_range_end

from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CANCEL_SECONDS = 1.0

OnListing = Callable[[rtypes.GetRange], Awaitable[None]]
OnEvent = Callable[[rtypes.Event], Awaitable[None]]


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    return prefix, prefix_range_end(prefix)


def single_key_range(key: bytes) -> tuple[bytes, bytes]:
    return key, key + b"\0"


class KeyRangeFollower:
    """Feeds ``on_listing`` each full listing and ``on_event`` every change after it."""

    def __init__(
        self,
        client: aetcd.Client,
        key_range: tuple[bytes, bytes],
        *,
        name: str,
        on_listing: OnListing,
        on_event: OnEvent,
        resync_delay: float = 0.5,
    ) -> None:
        self._client = client
        self._start, self._end = key_range
        self.name = name
        self._on_listing = on_listing
        self._on_event = on_event
        self._resync_delay = resync_delay
        self._task: asyncio.Task[None] | None = None
        self.listed = asyncio.Event()  # set after the first listing was handed over

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._list_and_watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # aetcd raises many kinds; all mean "resync"
                log.warning("%s broke (%s); resyncing", self.name, exc)
            await asyncio.sleep(self._resync_delay)

    async def _list_and_watch(self) -> None:
        listing = await self._client.get_range(self._start, self._end)
        await self._on_listing(listing)
        self.listed.set()
        watch = await self._client.watch(
            self._start, range_end=self._end, start_revision=listing.header.revision + 1
        )
        try:
            async for event in watch:
                await self._on_event(event)
        finally:
            # Best effort and bounded: aetcd's cancel queues a request behind the stream's
            # lock, and a stop (this task cancelled) must not wait on a stream that broke.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CANCEL_SECONDS):
                    await watch.cancel()
        raise ConnectionError("watch stream ended")

"""A consumer's membership of its group, as its rebalance callbacks tell it, and how a
stray cancellation is told from a real one."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)


class Membership(ConsumerRebalanceListener):
    """What this client knows of its place in the group: its partitions, and since when
    a rebalance has been going on (the consumer's watchdog reads both)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.assigned: set[TopicPartition] = set()
        # When the rebalance in progress began (its revocation), until its assignment.
        self.rebalancing_since: float | None = None
        # When (time.time()) it was last given partitions.
        self.assigned_at: float | None = None

    def rebalancing_for(self) -> float:
        since = self.rebalancing_since
        return 0.0 if since is None else time.monotonic() - since

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Offsets are committed after every batch, so nothing handled is lost here;
        # anything handled but not yet committed is redelivered and deduplicated.
        self.rebalancing_since = time.monotonic()
        self.assigned -= revoked
        if revoked:
            log.info("%s: partitions revoked: %s", self._name, sorted(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.rebalancing_since = None
        self.assigned_at = time.time()
        self.assigned |= assigned
        log.info("%s: partitions assigned: %s", self._name, sorted(assigned))


def cancelled_from_outside() -> bool:
    """Whether the running task was asked to stop (``stop()``), rather than reached by a
    CancelledError that a library's own task raised."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0

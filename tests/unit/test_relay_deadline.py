"""The relay gives up a publish that outlives its deadline, even one that swallows a cancel."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest

from shared.messaging.kafka import KafkaIdentity
from shared.messaging.relay import OutboxRelay, PublishTimeout

# Never connects: the files are read only when a producer is built.
NOBODY = KafkaIdentity(Path("unused"), "order")


class StuckRelay(OutboxRelay):
    """A publish that ignores the first cancellation and then waits forever, as a library
    that swallows a cancel in ``wait_for`` leaves it."""

    def __init__(self) -> None:
        super().__init__(
            cast(asyncpg.Pool, None),
            bootstrap="unused:9092",
            identity=NOBODY,
            dsn="unused",
            publish_timeout=0.05,
        )
        self.cancels = 0

    async def publish_batch(self) -> int:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancels += 1
                if self.cancels > 1:
                    raise


async def test_a_publish_that_swallows_its_cancel_is_still_given_up() -> None:
    relay = StuckRelay()
    with pytest.raises(PublishTimeout):
        await asyncio.wait_for(relay._publish_within_deadline(), 5)
    assert relay.cancels == 2


class QuickRelay(OutboxRelay):
    def __init__(self) -> None:
        super().__init__(cast(Any, None), bootstrap="unused:9092", identity=NOBODY, dsn="unused")

    async def publish_batch(self) -> int:
        return 3


async def test_a_publish_in_time_returns_what_it_sent() -> None:
    assert await QuickRelay()._publish_within_deadline() == 3

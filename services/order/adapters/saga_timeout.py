"""The saga timeout: cancels orders that stayed PENDING too long, counting only time in
which the saga could have moved.

A lost event or a stuck service must not leave an order pending forever, so every
instance checks about once a second and cancels what is overdue, announcing
OrderCancelled so inventory and payment undo their part. But a plain wall-clock
timeout also cancels the orders that were only waiting for Kafka, PostgreSQL or a
restarted instance to come back (one chaos run once lost 203 orders that way),
and their reserved stock is then missing from the sale.

**The saga clock.** The order database holds one clock (``saga_clock``, migration
0004): seconds in which the saga could move. Each round, before looking for overdue
orders, an instance adds the wall time since the clock's last advance, but only if:

- its Kafka link is healthy (``KafkaLink``): its consumer owns partitions and the
  broker answered one of its fetches within ``LINK_STALE_SECONDS``;
- the outbox is draining: no event has waited in it longer than
  ``LINK_STALE_SECONDS`` (checked in the same statement, so it covers every order
  relay, including one paused in the middle of a batch whose rows it holds);
- the database answers, since the round runs there.

Every advance adds exactly the time since the previous one, measured on the
database's ``now()``, in one conditional UPDATE of the one row, so any number of
instances taking turns move it at the rate of one, and a faulty local clock cannot
move it. A gap no instance could fill (PostgreSQL down, every link down, every
instance stopped) is cut to ``CAP_ROUNDS`` rounds' worth when the next advance comes,
so an outage costs an order at most a few seconds of its timeout, plus the
``LINK_STALE_SECONDS`` it takes to notice.

An order stores the clock's value when it was placed (``placed_clock``, in the same
INSERT: the last value plus what the next advance will add for the time since) and is
overdue once the clock moved more than ``saga_timeout_seconds`` past it. So the clock
never counts more for an order than the wall time it has waited: no order is cancelled
by it earlier than a plain timeout would have, only later, by the time the saga could
not move.

**The ceiling.** If the clock never moves (a link that is always unhealthy, a relay
that can never publish), orders would wait forever, so an order older than
``saga_timeout_max_seconds`` of wall time (unset: 20 timeouts, 600 s at 30 s) is
cancelled regardless. Both knobs follow the config center live.

**What the clock cannot see.** It watches this service's own link. Downstream faults,
such as an inventory or payment instance killed or paused, show up here only as a
hop that takes longer; their consumers' session timeout (4 s, shared/messaging/kafka.py)
hands their partitions on, well within the timeout. An order instance paused while it
owns partitions stalls those orders for that session timeout while its peers keep the
clock running.

Instances share the cancelling through ``FOR UPDATE SKIP LOCKED``; each batch is one
short transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from services.order import use_cases
from services.order.persistence import PostgresOrderUnitOfWork
from shared.messaging.unit_of_work import UnitOfWorkFactory
from shared.tasks import PeriodicTask

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 1.0
# A gap between two advances is counted up to this many rounds (an outage costs that).
CAP_ROUNDS = 3
# No fetch answer, or an event unsent, for this long: the saga cannot move; stop the clock.
LINK_STALE_SECONDS = 3.0

Seconds = float | Callable[[], float]


class FetchSource(Protocol):
    """What the link needs of the consumer (shared/messaging/consumer.IdempotentConsumer)."""

    @property
    def last_fetch_at(self) -> float | None: ...


def fetch_is_fresh(last_fetch_at: float | None, now: float, stale_seconds: float) -> bool:
    return last_fetch_at is not None and now - last_fetch_at <= stale_seconds


class KafkaLink:
    """This instance's Kafka link, as the saga clock sees it: healthy while its consumer
    owns partitions and the broker answered a fetch within ``stale_seconds``.

    The consumer is set once messaging runs; until then (and for an instance that takes
    no events) the link cannot vouch for the saga, and the peers' links keep the clock.
    """

    def __init__(
        self,
        consumer: FetchSource | None = None,
        *,
        stale_seconds: float = LINK_STALE_SECONDS,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.consumer = consumer
        self._stale = stale_seconds
        self._wall = wall  # the aiokafka fetch stamps are wall time

    def healthy(self) -> bool:
        if self.consumer is None:
            return False
        return fetch_is_fresh(self.consumer.last_fetch_at, self._wall(), self._stale)


def _reader(value: Seconds) -> Callable[[], float]:
    # A callable is read every round: the config center's knob, changed live.
    return value if callable(value) else lambda: value


class SagaTimeout:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory[PostgresOrderUnitOfWork],
        *,
        timeout_seconds: Seconds,
        ceiling_seconds: Seconds,
        link_healthy: Callable[[], bool],
        batch_size: int,
        interval_seconds: float = CHECK_INTERVAL_SECONDS,
        stale_seconds: float = LINK_STALE_SECONDS,
    ) -> None:
        self._uow = unit_of_work
        self._timeout = _reader(timeout_seconds)
        self._ceiling = _reader(ceiling_seconds)
        self._link_healthy = link_healthy
        self._batch_size = batch_size
        self._interval = interval_seconds
        self._stale = stale_seconds
        self._paused = True  # until the consumer first joins: said once it runs
        # A failed round (the database is down, say) is logged and the next one still
        # comes: this task is the only thing that ends a saga whose events were lost.
        self._task = PeriodicTask("saga timeout", self._check, interval=interval_seconds)
        self.cancelled = 0
        self.clock_advances = 0  # rounds in which this instance moved the clock

    async def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def advance_clock(self) -> float | None:
        """Moves the saga clock if the saga can move; returns its new value, or None if
        this round added nothing (link unhealthy, outbox stuck, or a peer just did)."""
        healthy = self._link_healthy()
        if healthy == self._paused:  # a change: say it once, not every second
            self._paused = not healthy
            if healthy:
                log.info("saga clock running on this instance: its Kafka link is healthy")
            else:
                log.warning(
                    "saga clock paused on this instance: no fetch answer from Kafka"
                    " for %.0fs (its peers may still run it)",
                    self._stale,
                )
        if not healthy:
            return None
        async with self._uow() as uow:
            value = await uow.clock.advance(
                cap_seconds=CAP_ROUNDS * self._interval,
                # Below half a round a peer has just advanced it: skip a useless write.
                min_gap_seconds=self._interval / 2,
                outbox_stale_seconds=self._stale,
            )
        if value is not None:
            self.clock_advances += 1
        return value

    async def cancel_overdue_batch(self) -> int:
        """Cancels up to one batch of overdue orders; returns how many."""
        cancelled = await use_cases.cancel_overdue(
            self._uow,
            timeout_seconds=self._timeout(),
            ceiling_seconds=self._ceiling(),
            limit=self._batch_size,
        )
        self.cancelled += cancelled
        return cancelled

    async def _check(self) -> None:
        await self.advance_clock()
        while await self.cancel_overdue_batch() == self._batch_size:
            pass  # a full batch: more may be waiting

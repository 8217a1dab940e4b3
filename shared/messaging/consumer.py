"""The idempotent consumer every service uses to react to events.

Each poll's records (all partitions, each partition's in order) are handled in
one database transaction: every event id is recorded in ``processed_events``
(unique per consumer group) and its handler applied; a redelivered event finds
its id already there and changes nothing. Only after that transaction commits
are the Kafka offsets committed. A crash in between means redelivery, which the
recorded ids absorb.

One transaction for many events is what lets a hot SKU go faster than one
commit per reservation (and consecutive events of one type can be merged by a
batch handler). If the transaction fails, its records are retried one by one, so
one bad record cannot hold the others back; a record that still fails after
``attempts`` tries, or cannot be parsed at all, goes to the dead-letter topic
with its error, and the partition carries on. A database outage is not a bad
record: the poll is read again later instead.

No handler calls another service today. One that did would follow the deadline
rule of every outbound call (shared/rpc/deadlines.py): an event has no incoming
deadline, so it would open ``deadline_scope(seconds)`` around its calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import TopicPartition

from shared.messaging.dead_letter import DeadLetterPublisher
from shared.messaging.handling import (
    BatchHandler,
    EventHandling,
    Handler,
    Preparer,
    RowLocks,
)
from shared.messaging.kafka import KafkaIdentity, KafkaTuning
from shared.messaging.membership import Membership, cancelled_from_outside
from shared.messaging.unit_of_work import PostgresUnitOfWork
from shared.observability.metrics import CONSUMER_LAG
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# While the broker cannot be reached at start-up: 0.2 s, 0.4 s, ... up to 1 s between tries.
CONNECT_BACKOFF_START, CONNECT_BACKOFF_MAX = 0.2, 1.0

# A rebalance ends within the rebalance timeout (aiokafka's default: the session timeout,
# 3 s), after at most one session timeout more while the coordinator waits out a member
# that died; after a broker restart, which also loads the group, `make chaos` saw 2-4 s.
# aiokafka can instead stay between revocation and assignment for good, silently (seen
# after broker restarts under load): past this, the consumer is replaced by a new one,
# which joins the group afresh. Twice the longest wait above (it was 15 s, which cost a
# chaos run 23 s of a stalled group after one broker restart).
REBALANCE_STUCK_SECONDS = 8.0
# A client that owns partitions has a fetch answered every few hundred milliseconds, with
# records or without. After Kafka's pod was replaced on Kubernetes (a new address, its
# groups still loading), every member once lost its coordinator and then waited, silently
# and without a revocation the watchdog above could see, for over a minute: past this
# much silence while it owns partitions, the client is replaced too. Above the ~13 s a
# replaced broker pod takes to come back, so an outage alone costs one replacement.
SILENT_SECONDS = 20.0
# A stuck client's stop (LeaveGroup first) can hang as well; the coordinator expels an
# abandoned member after its session timeout anyway.
STOP_TIMEOUT_SECONDS = 2.0
LAG_SECONDS = 1.0

UowT = TypeVar("UowT", bound=PostgresUnitOfWork)


class IdempotentConsumer(Generic[UowT]):
    def __init__(
        self,
        *,
        name: str,
        topics: Sequence[str],
        bootstrap: str,
        identity: KafkaIdentity,
        unit_of_work: Callable[[], UowT],
        handlers: Mapping[str, Handler[UowT]],
        batch_handlers: Mapping[str, BatchHandler[UowT]] | None = None,
        preparers: Mapping[str, Preparer] | None = None,
        row_locks: RowLocks[UowT] | None = None,
        dead_letters: DeadLetterPublisher,
        attempts: int = 3,
        max_batch: int = 500,
        tuning: KafkaTuning | None = None,
    ) -> None:
        self.name = name  # also the consumer group id
        self._topics = list(topics)
        self._bootstrap = bootstrap
        self._identity = identity
        self.handling = EventHandling(
            name,
            unit_of_work=unit_of_work,
            handlers=handlers,
            batch_handlers=batch_handlers,
            preparers=preparers,
            row_locks=row_locks,
            dead_letters=dead_letters,
            attempts=attempts,
        )
        self._dead_letters = dead_letters
        self._max_batch = max_batch
        self._tuning = tuning or KafkaTuning()
        self._listener = Membership(name)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._lag_recorded = 0.0
        self._lag_labels: set[tuple[str, str, str]] = set()

    @property
    def handled(self) -> int:
        return self.handling.handled

    @property
    def duplicates(self) -> int:
        return self.handling.duplicates

    @property
    def dead_lettered(self) -> int:
        return self.handling.dead_lettered

    @property
    def connected(self) -> bool:
        """Joined the group with partitions to read (False while the broker is away)."""
        return self._consumer is not None and bool(self._listener.assigned)

    @property
    def last_fetch_at(self) -> float | None:
        """When (``time.time()``) the broker last answered a fetch for a partition this
        instance owns; None while it owns none. Fetches repeat every few milliseconds
        while the broker is reachable, so a stale value means the link is down: the saga
        timeout's clock stops on it (services/order/saga_timeout.py)."""
        consumer = self._consumer
        if consumer is None:
            return None
        stamps = [consumer.last_poll_timestamp(tp) for tp in consumer.assignment()]
        known = [stamp for stamp in stamps if stamp is not None]
        return max(known) / 1000 if known else None

    async def start(self) -> None:
        """Returns at once: the consumer connects in the background, retrying until the
        broker answers, so a broker that is down never holds up the service's start."""
        self._task = asyncio.create_task(self._connect_and_run(), name=f"consumer {self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._consumer is not None:
            await self._consumer.stop()
        await self._dead_letters.stop()

    def _new_consumer(self) -> AIOKafkaConsumer:
        t = self._tuning
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            **self._identity.client_options(),
            group_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._max_batch,
            fetch_max_wait_ms=t.fetch_max_wait_ms,
            session_timeout_ms=t.session_timeout_ms,
            heartbeat_interval_ms=t.heartbeat_interval_ms,
            metadata_max_age_ms=t.metadata_max_age_ms,
            retry_backoff_ms=t.retry_backoff_ms,
            request_timeout_ms=t.request_timeout_ms,
        )
        consumer.subscribe(self._topics, listener=self._listener)
        return consumer

    async def _connect_and_run(self) -> None:
        while True:
            try:
                await self._connect()
                loop = asyncio.create_task(self._run(), name=f"consumer loop {self.name}")
                try:
                    await self._watch(loop)
                finally:
                    await cancel_and_wait(loop)
                await self._drop_consumer()
            except asyncio.CancelledError:
                if cancelled_from_outside():
                    raise
                # aiokafka cancels its own tasks when a broker goes away, and such a
                # CancelledError can escape its start, fetch or stop. Only stop() may end
                # this task: anything else would leave the group without this member.
                log.warning("%s: Kafka client cancelled from within; reconnecting", self.name)
                await self._drop_consumer()
                await asyncio.sleep(CONNECT_BACKOFF_MAX)

    async def _watch(self, loop: asyncio.Task[None]) -> None:
        """Returns once the loop has failed or is stuck in a rebalance (then the client is
        replaced). Apart from the loop: a stuck rebalance can hold up a commit in it too."""
        while True:
            done, _ = await asyncio.wait({loop}, timeout=1.0)
            if done:
                # A loop that ended cancelled (a CancelledError out of aiokafka's fetch)
                # has no exception to ask for: asking would raise it here.
                error = None if loop.cancelled() else loop.exception()
                # Never die quietly: a dead loop whose client still heartbeats would keep
                # its partitions from the group's other members for good.
                log.error(
                    "%s: the consumer loop ended (%r); replacing the consumer",
                    self.name,
                    error,
                    exc_info=error,
                )
                await asyncio.sleep(1.0)
                return
            if (stuck := self._listener.rebalancing_for()) > REBALANCE_STUCK_SECONDS:
                log.warning(
                    "%s: no partitions assigned %.0fs after a rebalance began; replacing the"
                    " consumer (its uncommitted records are redelivered)",
                    self.name,
                    stuck,
                )
                return
            if (silent := self._silent_for()) > SILENT_SECONDS:
                log.warning(
                    "%s: it owns partitions but no fetch was answered for %.0fs; replacing"
                    " the consumer (its uncommitted records are redelivered)",
                    self.name,
                    silent,
                )
                return

    def _silent_for(self) -> float:
        """Seconds since the broker last answered a fetch of a partition this client owns
        (or since it was given them); 0 while it owns none."""
        if not self._listener.assigned:
            return 0.0
        heard = self.last_fetch_at or self._listener.assigned_at
        return 0.0 if heard is None else time.time() - heard

    async def _drop_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                    await consumer.stop()
            except asyncio.CancelledError:
                if cancelled_from_outside():
                    raise
            except Exception:  # a client being replaced may fail to stop in any way
                pass
        self._listener.assigned.clear()
        self._listener.rebalancing_since = None
        self._listener.assigned_at = None

    async def _connect(self) -> None:
        backoff = CONNECT_BACKOFF_START
        while True:
            # Held before it starts: a stop() that cancels us mid-start must still stop it.
            # Left running, a client that had joined the group would keep heartbeating and
            # hold its partitions, read by no one, for max.poll.interval (5 minutes).
            self._consumer = consumer = self._new_consumer()
            try:
                await consumer.start()
                break
            except (KafkaError, OSError) as exc:
                self._consumer = None
                with contextlib.suppress(Exception):
                    await consumer.stop()
                log.warning(
                    "%s: Kafka unreachable (%s); retrying in %.1fs", self.name, exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, CONNECT_BACKOFF_MAX)
        log.info("%s: consumer connected to %s", self.name, self._bootstrap)

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=200, max_records=self._max_batch)
            except KafkaError as exc:
                log.warning("%s: fetch failed (%s); retrying", self.name, exc)
                await asyncio.sleep(1.0)
                continue
            await self._record_lag()
            if not batches:
                continue
            try:
                # Every partition's records in one pass and one transaction: partitions
                # handled side by side in separate transactions lock the same rows (a hot
                # SKU, a wallet) in different orders and deadlock; one pass cannot, and
                # it merges a hot SKU's reservations across partitions too.
                await self.handling.process([r for records in batches.values() for r in records])
            except Exception as exc:
                # The database or the dead-letter topic is unreachable: nothing of this
                # batch is committed; read it again from its first records after a pause.
                log.warning("%s: batch failed (%r); will re-read it", self.name, exc)
                # A rebalance during the failure may have taken some partitions away:
                # their new owner starts from the committed offset anyway.
                owned = self._consumer.assignment()
                for tp, records in batches.items():
                    if tp in owned:
                        self._consumer.seek(tp, records[0].offset)
                await asyncio.sleep(1.0)
                continue
            offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # A rebalance took the partitions away; their new owner re-reads these
                # records and the processed_events table makes that harmless.
                log.warning(
                    "%s: offset commit failed (%s); records will be redelivered", self.name, exc
                )

    async def _record_lag(self) -> None:
        """shop_consumer_lag of each partition this member holds, at most once a second
        (high watermark from the last fetch, minus the position: what is left to read)."""
        now = time.monotonic()
        if self._consumer is None or now - self._lag_recorded < LAG_SECONDS:
            return
        self._lag_recorded = now
        owned = self._consumer.assignment()
        for tp in owned:
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            position = await self._consumer.position(tp)
            labels = (self.name, tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(*labels).set(max(highwater - position, 0))
            self._lag_labels.add(labels)
        gone = [lab for lab in self._lag_labels if TopicPartition(lab[1], int(lab[2])) not in owned]
        for labels in gone:
            CONSUMER_LAG.remove(*labels)  # another member reports it now
            self._lag_labels.discard(labels)

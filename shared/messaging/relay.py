"""Publishes outbox rows to Kafka, then marks them sent.

At-least-once: a row is marked sent only after Kafka acknowledged it (acks=all,
idempotent producer). A crash between the two republishes the row, and the
consumers drop the duplicate by event id. Several relays may run against one
database: ``FOR UPDATE SKIP LOCKED`` gives each batch of rows to exactly one of
them at a time. The relay sleeps on LISTEN/NOTIFY (the outbox trigger) rather
than polling, so an event leaves within milliseconds of its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.messaging.kafka import KafkaIdentity, KafkaTuning, kafka_producer
from shared.messaging.spans import publish_spans
from shared.observability.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE
from shared.observability.trace_context import HEADER as TRACE_HEADER
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# While the broker is down: wait 0.1 s, 0.2 s, ... up to 1 s between attempts (a cheap
# failed connect; a longer pause would add itself to the recovery after the broker is back).
BACKOFF_START, BACKOFF_MAX = 0.1, 1.0
IDLE_RECHECK_SECONDS = 1.0  # in case a notification was missed (reconnect)
GAUGE_SECONDS = 5.0  # how often the backlog gauges are read while publishing works


@dataclass(frozen=True)
class OutboxLag:
    pending: int
    oldest_age_seconds: float


async def outbox_lag(conn: asyncpg.Connection | asyncpg.Pool) -> OutboxLag:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
        " FROM outbox WHERE sent_at IS NULL"
    )
    assert row is not None
    return OutboxLag(int(row["n"]), float(row["age"]))


class PublishTimeout(Exception):
    """Kafka did not acknowledge a batch in time; the producer is replaced."""


class OutboxRelay:
    """Owns its producer: after a broker restart an idempotent producer can be left
    waiting on acknowledgements that never come, so a batch that is not acknowledged
    within ``publish_timeout`` is rolled back (to be published again) and the
    producer is replaced by a fresh one."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        bootstrap: str,
        identity: KafkaIdentity,
        dsn: str,
        batch_size: int = 500,
        retention_seconds: float = 3600.0,
        publish_timeout: float = 5.0,
        tuning: KafkaTuning | None = None,
    ) -> None:
        self._pool = pool
        self._dsn = dsn  # for the LISTEN connection, which must not go back to the pool
        self._bootstrap = bootstrap
        self._identity = identity
        self._tuning = tuning or KafkaTuning()
        self._producer: AIOKafkaProducer | None = None
        self._publish_timeout = publish_timeout
        self._batch_size = batch_size
        self._retention = retention_seconds
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self.published = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox relay")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self._unlisten()
        await self._drop_producer()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = kafka_producer(self._bootstrap, self._identity, self._tuning)
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

    async def _listen(self) -> None:
        if self._listener is None or self._listener.is_closed():
            listener = await asyncpg.connect(self._dsn)
            await listener.add_listener("outbox", self._on_notify)
            self._listener = listener

    async def _unlisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def _run(self) -> None:
        backoff = BACKOFF_START
        last_cleanup = 0.0
        last_lag_log = 0.0
        last_gauges = 0.0
        while True:
            try:
                await self._listen()
                self._wakeup.clear()
                sent = await self._publish_within_deadline()
                backoff = BACKOFF_START
                now = time.monotonic()
                if now - last_gauges > GAUGE_SECONDS:
                    await self._update_gauges()
                    last_gauges = now
                if sent == self._batch_size:
                    continue  # more are waiting: no sleep
                if now - last_cleanup > 60:
                    await self._delete_old_sent_rows()
                    last_cleanup = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), IDLE_RECHECK_SECONDS)
            except (
                KafkaError,
                PublishTimeout,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,  # a connection the restart left mid-operation
            ) as exc:
                now = time.monotonic()
                if now - last_lag_log > 5:
                    lag = await self._lag_or_none()
                    if lag is not None:
                        OUTBOX_BACKLOG.set(lag.pending)
                        OUTBOX_OLDEST_AGE.set(lag.oldest_age_seconds)
                    log.warning(
                        "outbox relay cannot publish (%s); retrying in %.1fs; lag %s",
                        exc,
                        backoff,
                        lag,
                    )
                    last_lag_log = now
                await self._unlisten()
                if isinstance(exc, KafkaError | PublishTimeout):
                    await self._drop_producer()  # a fresh one next time: see the class doc
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _publish_within_deadline(self) -> int:
        """``publish_batch`` in a task of its own, given up if it outlives its own timeout by
        far: a cancellation the client library swallows (Python 3.11's ``wait_for`` can)
        would leave the relay waiting for good. Seen on Kubernetes after Kafka's pod was
        replaced: both order relays silent, their rows unsent, until they were restarted."""
        task = asyncio.create_task(self.publish_batch(), name="outbox publish")
        deadline = self._publish_timeout * 3
        try:
            done, _ = await asyncio.wait({task}, timeout=deadline)
        except asyncio.CancelledError:
            await cancel_and_wait(task)
            raise
        if not done:
            await cancel_and_wait(task)
            raise PublishTimeout(f"a batch still unpublished after {deadline:g}s")
        return task.result()

    async def _update_gauges(self) -> None:
        lag = await outbox_lag(self._pool)
        OUTBOX_BACKLOG.set(lag.pending)
        OUTBOX_OLDEST_AGE.set(lag.oldest_age_seconds)

    async def _lag_or_none(self) -> OutboxLag | None:
        try:
            return await outbox_lag(self._pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None

    async def publish_batch(self) -> int:
        """Publishes up to one batch; returns how many rows it marked sent."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, topic, key, payload, traceparent FROM outbox"
                " WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch_size,
            )
            if not rows:
                return 0
            producer = await self._ensure_producer()
            try:
                async with asyncio.timeout(self._publish_timeout):
                    # Sent in order; the idempotent producer keeps per-partition order.
                    with publish_spans(rows) as traceparents:
                        futures = [
                            await producer.send(
                                row["topic"],
                                value=row["payload"],
                                key=row["key"].encode(),
                                headers=[(TRACE_HEADER, (traceparent or "").encode())],
                            )
                            for row, traceparent in zip(rows, traceparents, strict=True)
                        ]
                        await asyncio.gather(*futures)
            except TimeoutError:
                raise PublishTimeout(
                    f"{len(rows)} events not acknowledged within {self._publish_timeout}s"
                ) from None
            # clock_timestamp(), not now(): the moment Kafka acknowledged, not the moment
            # this transaction began (the outbox lag figures read it).
            await conn.execute(
                "UPDATE outbox SET sent_at = clock_timestamp() WHERE id = ANY($1::bigint[])",
                [row["id"] for row in rows],
            )
        self.published += len(rows)
        return len(rows)

    async def _delete_old_sent_rows(self) -> None:
        await self._pool.execute(
            "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)", self._retention
        )

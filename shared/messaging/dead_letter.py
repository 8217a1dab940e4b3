"""The dead-letter topic: where a record goes when it cannot be handled.

It keeps the original bytes and says why, where from, and who gave up, so a
person can inspect it and replay it; the source partition moves on.

The publisher connects on first use and again after any failure, so a broker
that is down when the service starts (or restarts under it) never blocks
start-up: a record that cannot be dead-lettered is simply not committed, and
the consumer reads it again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from shared.messaging.kafka import KafkaIdentity, KafkaTuning, kafka_producer
from shared.messaging.topics import DEADLETTER
from shared.observability.metrics import DEAD_LETTERS

log = logging.getLogger(__name__)

# Bounded: if the broker cannot take it, the consumer re-reads the record later
# rather than committing past a record that is in neither topic.
PUBLISH_TIMEOUT_SECONDS = 10.0


class DeadLetterPublisher:
    def __init__(
        self, bootstrap: str, identity: KafkaIdentity, tuning: KafkaTuning | None = None
    ) -> None:
        self._bootstrap = bootstrap
        self._identity = identity
        self._tuning = tuning or KafkaTuning()
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def publish(self, record: ConsumerRecord, *, consumer: str, error: str) -> None:
        headers = [
            *(record.headers or ()),
            ("dlq.error", error[:2000].encode()),
            ("dlq.consumer", consumer.encode()),
            ("dlq.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                producer = await self._connected()
                await producer.send_and_wait(
                    DEADLETTER, value=record.value, key=record.key, headers=headers
                )
        except BaseException:
            await self.stop()  # a fresh producer next time (see relay.OutboxRelay)
            raise
        DEAD_LETTERS.labels(record.topic).inc()
        log.error(
            "dead-lettered %s/%s/%s for %s: %s",
            record.topic,
            record.partition,
            record.offset,
            consumer,
            error,
        )

    async def _connected(self) -> AIOKafkaProducer:
        async with self._lock:
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

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

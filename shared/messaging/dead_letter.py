"""The dead-letter topic: where a record goes when it cannot be handled.

It keeps the original bytes and says why, where from, and who gave up, so a
person can inspect it and replay it; the source partition moves on.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from shared.messaging.topics import DEADLETTER

log = logging.getLogger(__name__)


async def dead_letter(
    producer: AIOKafkaProducer, record: ConsumerRecord, *, consumer: str, error: str
) -> None:
    headers = [
        *(record.headers or ()),
        ("dlq.error", error[:2000].encode()),
        ("dlq.consumer", consumer.encode()),
        ("dlq.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]
    # Bounded: if the broker cannot take it, the consumer re-reads the record later
    # rather than committing past a record that is in neither topic.
    await asyncio.wait_for(
        producer.send_and_wait(DEADLETTER, value=record.value, key=record.key, headers=headers),
        timeout=10,
    )
    log.error(
        "dead-lettered %s/%s/%s for %s: %s",
        record.topic,
        record.partition,
        record.offset,
        consumer,
        error,
    )

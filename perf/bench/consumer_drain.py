"""The consumer's throughput for `make bench-trust`: records/s a fresh group drains
from a backlog, over whatever the stack's Kafka speaks (SSL with a client certificate,
or the baseline's PLAINTEXT). A raw aiokafka consumer with the idempotent consumer's
fetch settings and batch size, committing after every poll, touching no database."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import uuid
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack.stack import Stack
from shared.messaging.kafka import KafkaTuning, kafka_producer


@contextlib.asynccontextmanager
async def drain_topic(
    stack: Stack, topic: str, partitions: int
) -> AsyncIterator[AIOKafkaAdminClient]:
    """The bench's own topic (the operator, a super user, may use it on either broker)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=stack.kafka_bootstrap,
        **stack.kafka_operator().client_options(),
        client_id="bench-trust",
    )
    await admin.start()
    try:
        if topic in set(await admin.list_topics()):
            await admin.delete_topics([topic], timeout_ms=30000)
            await asyncio.sleep(1)
        await admin.create_topics([NewTopic(topic, partitions, 1)], timeout_ms=30000)
        await leaders_elected(admin, topic)
        yield admin
        await admin.delete_topics([topic], timeout_ms=30000)
    finally:
        await admin.close()


async def leaders_elected(admin: AIOKafkaAdminClient, topic: str, timeout: float = 30) -> None:
    """Until every partition of a new topic has a leader (a producer would retry before)."""
    deadline = time.monotonic() + timeout
    while True:
        (described,) = await admin.describe_topics([topic])
        parts = described.get("partitions") or []
        if not described.get("error_code") and parts and all(p["leader"] >= 0 for p in parts):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: partitions without a leader after {timeout:g}s")
        await asyncio.sleep(0.2)


async def fill_backlog(stack: Stack, topic: str, records: int, size: int) -> float:
    """``records`` records of ``size`` bytes on ``topic``; returns the seconds it took."""
    producer = kafka_producer(stack.kafka_bootstrap, stack.kafka_operator())
    payload = os.urandom(size)
    began = time.monotonic()
    await producer.start()
    try:
        for first in range(0, records, 1000):
            sends = [
                await producer.send(topic, payload, key=str(i).encode())
                for i in range(first, min(records, first + 1000))
            ]
            await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return time.monotonic() - began


async def drain(stack: Stack, topic: str, records: int) -> float:
    """Records/s a fresh consumer group reads the backlog at, from its first record to its
    last (joining the group is not counted), committing after every poll."""
    tuning = KafkaTuning()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_bootstrap,
        **stack.kafka_operator().client_options(),
        group_id=f"bench-drain-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,  # the idempotent consumer's max_batch
        fetch_max_wait_ms=tuning.fetch_max_wait_ms,
        session_timeout_ms=tuning.session_timeout_ms,
        heartbeat_interval_ms=tuning.heartbeat_interval_ms,
        request_timeout_ms=tuning.request_timeout_ms,
    )
    await consumer.start()
    try:
        seen = 0
        first_at: float | None = None
        first_batch = 0
        deadline = time.monotonic() + 120
        while seen < records:
            if time.monotonic() > deadline:
                raise TimeoutError(f"drained {seen} of {records} records in 120 s")
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            got = sum(len(batch) for batch in batches.values())
            if not got:
                continue
            if first_at is None:
                first_at, first_batch = time.monotonic(), got
            seen += got
            await consumer.commit()
        elapsed = time.monotonic() - (first_at or time.monotonic())
    finally:
        await consumer.stop()
    return (seen - first_batch) / elapsed if elapsed > 0 else math.inf

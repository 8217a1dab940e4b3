"""Everything a service needs to take part in the saga, started and stopped as one.

The outbox relay (with its own producer) and, for services that react to events,
one idempotent consumer (with a dead-letter publisher) whose group is the
service's name, so its instances share partitions. None of them waits for Kafka:
each connects, and reconnects, in the background (the outbox keeps the events
meanwhile), so a broker outage never holds up start-up or PlaceOrder.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic

import asyncpg

from shared.messaging.consumer import IdempotentConsumer, UowT
from shared.messaging.dead_letter import DeadLetterPublisher
from shared.messaging.kafka import KafkaIdentity, KafkaTuning
from shared.messaging.relay import OutboxRelay
from shared.messaging.subscriptions import Subscriptions
from shared.settings import ServiceSettings


@dataclass
class Messaging(Generic[UowT]):
    relay: OutboxRelay
    consumer: IdempotentConsumer[UowT] | None


@contextlib.asynccontextmanager
async def run_messaging(
    settings: ServiceSettings,
    pool: asyncpg.Pool,
    unit_of_work: Callable[[], UowT],
    subscriptions: Subscriptions[UowT] | None = None,
) -> AsyncIterator[Messaging[UowT]]:
    tuning = kafka_tuning(settings)
    # The service is its certificate's name to Kafka, as to its gRPC peers.
    identity = KafkaIdentity(
        settings.tls_dir, settings.service_name, plaintext=not settings.infra_tls
    )
    relay = OutboxRelay(
        pool,
        bootstrap=settings.kafka_bootstrap,
        identity=identity,
        dsn=settings.pg_dsn,
        tuning=tuning,
    )
    consumer: IdempotentConsumer[UowT] | None = None
    try:
        await relay.start()
        if subscriptions is not None and settings.consume_events:
            consumer = IdempotentConsumer(
                name=settings.service_name,
                topics=subscriptions.topics,
                bootstrap=settings.kafka_bootstrap,
                identity=identity,
                unit_of_work=unit_of_work,
                handlers=subscriptions.handlers,
                batch_handlers=subscriptions.batch_handlers,
                preparers=subscriptions.preparers,
                row_locks=subscriptions.lock_rows(),
                dead_letters=DeadLetterPublisher(settings.kafka_bootstrap, identity, tuning),
                tuning=tuning,
            )
            await consumer.start()
        yield Messaging(relay, consumer)
    finally:
        if consumer is not None:
            await consumer.stop()
        await relay.stop()


def kafka_tuning(settings: ServiceSettings) -> KafkaTuning:
    return KafkaTuning(
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
    )

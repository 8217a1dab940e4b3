"""Every Kafka client the kit builds carries the shop's tuning (shared/messaging/kafka.py),
not the library's defaults: a consumer that waited aiokafka's 40 s for a JoinGroup a
restarted broker never answered stalled its group in `make chaos`."""

from __future__ import annotations

from typing import cast

import pytest

from pki.authority import ensure_authority
from shared.messaging.consumer import IdempotentConsumer
from shared.messaging.dead_letter import DeadLetterPublisher
from shared.messaging.kafka import KafkaIdentity, KafkaTuning, kafka_producer
from shared.messaging.unit_of_work import PostgresUnitOfWork


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> KafkaIdentity:
    tls_dir = tmp_path_factory.mktemp("tls")
    ensure_authority(tls_dir, ["order"])
    return KafkaIdentity(tls_dir, "order")


TUNING = KafkaTuning(
    session_timeout_ms=2_000,
    heartbeat_interval_ms=600,
    metadata_max_age_ms=7_000,
    retry_backoff_ms=150,
    fetch_max_wait_ms=90,
    request_timeout_ms=4_000,
)


async def test_a_consumer_is_built_with_the_tuning_it_is_given(identity: KafkaIdentity) -> None:
    consumer: IdempotentConsumer[PostgresUnitOfWork] = IdempotentConsumer(
        name="tuning",
        topics=["shop.orders.v1"],
        bootstrap="127.0.0.1:1",
        identity=identity,
        unit_of_work=lambda: cast(PostgresUnitOfWork, None),  # never called: never started
        handlers={},
        dead_letters=DeadLetterPublisher("127.0.0.1:1", identity),
        tuning=TUNING,
    )
    client = consumer._new_consumer()  # built, not started: no broker needed
    assert client._client._request_timeout_ms == 4_000
    assert client._client._metadata_max_age_ms == 7_000
    assert client._client._retry_backoff == 0.15
    assert client._session_timeout_ms == 2_000
    assert client._heartbeat_interval_ms == 600
    assert client._rebalance_timeout_ms == 2_000  # aiokafka's default: the session's
    assert client._fetch_max_wait_ms == 90


async def test_the_default_tuning_times_requests_out_in_seconds_not_forty(
    identity: KafkaIdentity,
) -> None:
    assert KafkaTuning().request_timeout_ms <= 5_000
    producer = kafka_producer("127.0.0.1:1", identity)
    assert producer.client._request_timeout_ms == KafkaTuning().request_timeout_ms


async def test_every_client_speaks_tls_with_its_certificate(identity: KafkaIdentity) -> None:
    producer = kafka_producer("127.0.0.1:1", identity)
    assert producer.client._security_protocol == "SSL"
    assert producer.client._ssl_context is not None
    # A context per client: one built after a renewal reads the new files.
    assert identity.ssl_context() is not identity.ssl_context()

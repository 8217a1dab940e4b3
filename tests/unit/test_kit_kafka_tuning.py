"""Every Kafka client the kit builds carries the shop's tuning (shared/messaging/kafka.py),
not the library's defaults: a consumer that waited aiokafka's 40 s for a JoinGroup a
restarted broker never answered stalled its group in `make chaos`."""

from __future__ import annotations

import asyncio
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


class _StrayCancelClient:
    """A Kafka client whose library cancels its own work once, as aiokafka's can when a
    broker goes away: a CancelledError that nobody asked for."""

    def __init__(self, starts: list[str], *, cancel_in: str) -> None:
        self._starts, self._cancel_in = starts, cancel_in

    async def start(self) -> None:
        self._starts.append(self._cancel_in)
        if "start" in self._cancel_in:
            raise asyncio.CancelledError

    async def getmany(self, **_: object) -> dict[object, list[object]]:
        await asyncio.sleep(0.01)
        if "fetch" in self._cancel_in:
            raise asyncio.CancelledError
        return {}

    async def stop(self) -> None:
        if "stop" in self._cancel_in:
            raise asyncio.CancelledError

    def assignment(self) -> set[object]:
        return set()


async def test_a_cancellation_from_inside_the_client_is_survived_and_stop_still_stops(
    identity: KafkaIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer: IdempotentConsumer[PostgresUnitOfWork] = IdempotentConsumer(
        name="stray-cancel",
        topics=["shop.orders.v1"],
        bootstrap="127.0.0.1:1",
        identity=identity,
        unit_of_work=lambda: cast(PostgresUnitOfWork, None),  # no record ever arrives
        handlers={},
        dead_letters=DeadLetterPublisher("127.0.0.1:1", identity),
    )
    starts: list[str] = []
    clients = iter(["start", "fetch", "fetch and stop", "none"])
    monkeypatch.setattr(
        consumer, "_new_consumer", lambda: _StrayCancelClient(starts, cancel_in=next(clients))
    )
    monkeypatch.setattr("shared.messaging.consumer.CONNECT_BACKOFF_MAX", 0.01)
    monkeypatch.setattr("shared.messaging.consumer.asyncio.sleep", _short_sleep)
    await consumer.start()
    async with asyncio.timeout(10):
        while starts[-1:] != ["none"]:
            await asyncio.sleep(0.01)
    # Every stray cancellation ended in a new client, not in a dead consumer task.
    assert starts == ["start", "fetch", "fetch and stop", "none"]
    assert consumer._task is not None and not consumer._task.done()
    async with asyncio.timeout(5):
        await consumer.stop()
    assert consumer._task.done()


_real_sleep = asyncio.sleep


async def _short_sleep(seconds: float) -> None:
    await _real_sleep(min(seconds, 0.01))

"""Outbox, relay, idempotent consumer and dead letters on the real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack.stack import Stack
from shared.db.migrations import apply_migrations
from shared.db.pool import create_pool
from shared.errors import Unavailable
from shared.messaging.consumer import REBALANCE_STUCK_SECONDS, IdempotentConsumer
from shared.messaging.dead_letter import DeadLetterPublisher
from shared.messaging.envelope import Event, unwrap, wrap
from shared.messaging.kafka import kafka_producer
from shared.messaging.outbox import MIGRATIONS
from shared.messaging.relay import OutboxRelay, outbox_lag
from shared.messaging.topics import DEADLETTER
from shared.messaging.unit_of_work import PostgresUnitOfWork, Publication
from shop.events.v1 import order_events_pb2
from tests.support.kafka import identity, options
from tests.support.services import recreate_database
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    dsn = await recreate_database(stack, "messaging_test")
    await apply_migrations(dsn, MIGRATIONS)
    db = await create_pool(dsn, max_size=20)
    await db.execute("CREATE TABLE effects (event_id uuid, note text)")
    yield db
    await db.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def producer(stack: Stack) -> AsyncIterator[AIOKafkaProducer]:
    kafka = kafka_producer(stack.kafka_bootstrap, identity(stack))
    await kafka.start()
    yield kafka
    await kafka.stop()


async def new_topic(stack: Stack, partitions: int = 3) -> str:
    name = f"test.messaging.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**options(stack))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


def order_created(order_id: str) -> order_events_pb2.OrderCreated:
    return order_events_pb2.OrderCreated(order_id=order_id, user_id=str(uuid.uuid4()))


async def read_all(stack: Stack, topic: str, expected: int, timeout: float = 20.0) -> list:
    consumer = AIOKafkaConsumer(
        topic, **options(stack), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < expected:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
        await asyncio.sleep(0.5)  # anything beyond `expected` would be a duplicate
        for batch in (await consumer.getmany(timeout_ms=200)).values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def test_only_committed_outbox_rows_are_published_once_by_two_relays(
    stack: Stack, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(stack)
    committed: set[str] = set()
    for i in range(300):
        async with PostgresUnitOfWork(pool) as uow:
            committed.add(uow.outbox.add(topic, order_created(f"o{i}"), f"o{i}"))
    with pytest.raises(RuntimeError):
        async with PostgresUnitOfWork(pool) as uow:
            uow.outbox.add(topic, order_created("rolled-back"), "rolled-back")
            raise RuntimeError("the state change failed, so must the event")
    dsn = stack.pg_dsn("shop_messaging_test")
    relays = [
        OutboxRelay(
            pool,
            bootstrap=stack.kafka_bootstrap,
            identity=identity(stack),
            dsn=dsn,
            batch_size=50,
        )
        for _ in range(2)
    ]
    for relay in relays:
        await relay.start()
    try:
        records = await read_all(stack, topic, expected=300)
    finally:
        for relay in relays:
            await relay.stop()
    published = [unwrap(r.value).envelope.event_id for r in records]
    assert sorted(published) == sorted(committed)  # all of them, none twice, no rollback
    assert all(r.key.decode().startswith("o") for r in records)
    assert all(dict(r.headers)["traceparent"] for r in records)
    assert sum(relay.published for relay in relays) == 300
    assert (await outbox_lag(pool)).pending == 0


async def test_consumer_applies_each_event_once_and_dead_letters_poison(
    stack: Stack, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(stack, partitions=1)

    async def record(uow: PostgresUnitOfWork, event: Event) -> None:
        await uow.connection.execute(
            "INSERT INTO effects VALUES ($1, $2)", event.event_id, event.envelope.aggregate_id
        )

    async def explode(uow: PostgresUnitOfWork, event: Event) -> None:
        raise RuntimeError("this handler always fails")

    good = wrap(order_created("a"), "a")
    failing = wrap(order_events_pb2.OrderCancelled(order_id="b"), "b")
    after = wrap(order_created("c"), "c")
    await producer.send_and_wait(topic, good.SerializeToString(), key=b"a")
    await producer.send_and_wait(topic, good.SerializeToString(), key=b"a")  # redelivery
    await producer.send_and_wait(topic, b"\xff not an envelope", key=b"x")  # poison
    await producer.send_and_wait(topic, failing.SerializeToString(), key=b"b")
    await producer.send_and_wait(topic, after.SerializeToString(), key=b"c")

    group = f"test-{uuid.uuid4().hex[:6]}"
    consumer = IdempotentConsumer(
        name=group,
        topics=[topic],
        bootstrap=stack.kafka_bootstrap,
        identity=identity(stack),
        unit_of_work=lambda: PostgresUnitOfWork(pool),
        handlers={"shop.events.v1.OrderCreated": record, "shop.events.v1.OrderCancelled": explode},
        dead_letters=DeadLetterPublisher(stack.kafka_bootstrap, identity(stack)),
        attempts=2,
    )
    dlq = AIOKafkaConsumer(
        DEADLETTER,
        **options(stack),
        auto_offset_reset="latest",
        group_id=None,
    )
    await dlq.start()
    await dlq.seek_to_end()
    await consumer.start()
    try:
        async with asyncio.timeout(20):
            while consumer.handled < 2 or consumer.dead_lettered < 2:
                await asyncio.sleep(0.1)
        dead: list = []
        async with asyncio.timeout(10):
            while len(dead) < 2:
                for batch in (await dlq.getmany(timeout_ms=200)).values():
                    dead.extend(
                        r for r in batch if dict(r.headers)["dlq.consumer"] == group.encode()
                    )
    finally:
        await consumer.stop()
        await dlq.stop()

    # The duplicate changed nothing, and the partition went on past the poison and the failure.
    assert consumer.duplicates == 1
    errors = sorted(dict(r.headers)["dlq.error"].decode() for r in dead)
    assert errors[0].startswith("malformed")
    assert "OrderCancelled failed 2 times" in errors[1]
    effects = await pool.fetch(
        "SELECT note FROM effects WHERE event_id = ANY($1::uuid[])",
        [uuid.UUID(good.event_id), uuid.UUID(after.event_id)],
    )
    assert sorted(r["note"] for r in effects) == ["a", "c"]


def recording_consumer(
    pool: asyncpg.Pool, topic: str, bootstrap: str, handled: list[str], stack: Stack
) -> IdempotentConsumer[PostgresUnitOfWork]:
    """A consumer of its own group that appends each OrderCreated's aggregate id to
    ``handled``."""

    async def record(uow: PostgresUnitOfWork, event: Event) -> None:
        handled.append(event.envelope.aggregate_id)

    return IdempotentConsumer(
        name=f"test-{uuid.uuid4().hex[:6]}",
        topics=[topic],
        bootstrap=bootstrap,
        identity=identity(stack),
        unit_of_work=lambda: PostgresUnitOfWork(pool),
        handlers={"shop.events.v1.OrderCreated": record},
        dead_letters=DeadLetterPublisher(bootstrap, identity(stack)),
    )


async def test_relay_and_consumer_start_without_kafka_and_connect_when_it_answers(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    topic = await new_topic(stack, partitions=1)
    host, _, port = stack.kafka_bootstrap.rpartition(":")
    broker = TcpProxy(host, int(port))  # cut: the broker is unreachable, as if it were down
    handled: list[str] = []
    dsn = stack.pg_dsn("shop_messaging_test")
    relay = OutboxRelay(pool, bootstrap=broker.endpoint, identity=identity(stack), dsn=dsn)
    consumer = recording_consumer(pool, topic, broker.endpoint, handled, stack)
    # Neither start waits for the broker (a bound only so that a regression fails, not hangs).
    async with asyncio.timeout(5):
        await relay.start()
        await consumer.start()
    try:
        async with PostgresUnitOfWork(pool) as uow:
            uow.outbox.add(topic, order_created("kept"), "kept")
        await asyncio.sleep(1.0)
        assert not consumer.connected and handled == []
        assert (await outbox_lag(pool)).pending == 1  # the outbox keeps it meanwhile

        await broker.open()
        async with asyncio.timeout(30):
            while handled != ["kept"]:
                await asyncio.sleep(0.1)
        assert consumer.connected
        assert (await outbox_lag(pool)).pending == 0
    finally:
        await consumer.stop()
        await relay.stop()
        await broker.cut()


async def test_a_consumer_stuck_between_revocation_and_assignment_is_replaced(
    stack: Stack, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    """aiokafka can stay between a revocation and an assignment after a broker restart,
    saying nothing. Past REBALANCE_STUCK_SECONDS the consumer replaces its client, which
    joins the group afresh and goes on with the partition."""
    topic = await new_topic(stack, partitions=1)
    handled: list[str] = []
    consumer = recording_consumer(pool, topic, stack.kafka_bootstrap, handled, stack)
    await consumer.start()
    try:
        await producer.send_and_wait(topic, wrap(order_created("a"), "a").SerializeToString())
        async with asyncio.timeout(20):
            while handled != ["a"]:
                await asyncio.sleep(0.1)
        client = consumer._consumer
        # As if a rebalance had begun long ago and never ended.
        consumer._listener.rebalancing_since = time.monotonic() - REBALANCE_STUCK_SECONDS - 1
        async with asyncio.timeout(30):  # a new client, in the group with the partition
            while consumer._consumer is client or not consumer.connected:
                await asyncio.sleep(0.1)
        assert consumer._listener.rebalancing_since is None
        await producer.send_and_wait(topic, wrap(order_created("b"), "b").SerializeToString())
        async with asyncio.timeout(20):
            while handled != ["a", "b"]:
                await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


async def test_an_outage_reported_by_the_unit_of_work_is_read_again_not_dead_lettered(
    stack: Stack, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    """The unit of work reports a connection lost at BEGIN or COMMIT as Unavailable: the
    consumer treats it as the outage it is (the batch is read again), never as a bad
    event to retry and dead-letter."""
    topic = await new_topic(stack, partitions=1)
    outages = 5  # more than the consumer's attempts per event
    handled: list[str] = []

    async def flaky(uow: PostgresUnitOfWork, event: Event) -> None:
        nonlocal outages
        if outages:
            outages -= 1
            raise Unavailable("a dependency of this service is unavailable; retry later")
        handled.append(event.envelope.aggregate_id)

    consumer = IdempotentConsumer(
        name=f"test-{uuid.uuid4().hex[:6]}",
        topics=[topic],
        bootstrap=stack.kafka_bootstrap,
        identity=identity(stack),
        unit_of_work=lambda: PostgresUnitOfWork(pool),
        handlers={"shop.events.v1.OrderCreated": flaky},
        dead_letters=DeadLetterPublisher(stack.kafka_bootstrap, identity(stack)),
        attempts=2,
    )
    await producer.send_and_wait(topic, wrap(order_created("a"), "a").SerializeToString())
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while handled != ["a"]:
                await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
    assert consumer.dead_lettered == 0 and outages == 0


async def test_a_read_only_unit_of_work_opens_no_transaction_and_stages_no_event(
    pool: asyncpg.Pool,
) -> None:
    async with PostgresUnitOfWork(pool, read_only=True) as uow:
        assert not uow.connection.is_in_transaction()
        # Each statement commits on its own: a later failure takes nothing back.
        await uow.connection.execute("INSERT INTO effects VALUES (gen_random_uuid(), 'ro')")
        with pytest.raises(RuntimeError):
            assert uow.outbox  # no commit to publish an event with
    async with PostgresUnitOfWork(pool) as uow:
        assert uow.connection.is_in_transaction()
    assert await pool.fetchval("SELECT count(*) FROM effects WHERE note = 'ro'") == 1
    # A connection a pool holds is still usable after a session-state-free release.
    assert await pool.fetchval("SELECT 1") == 1


async def test_recorded_domain_events_reach_the_outbox_through_the_publishing_map_on_commit(
    pool: asyncpg.Pool,
) -> None:
    @dataclass(frozen=True)
    class Placed:
        order_id: str

    def publication(event: Placed) -> Publication:
        return Publication(order_created(event.order_id), event.order_id)

    kept, dropped = str(uuid.uuid4()), str(uuid.uuid4())
    async with PostgresUnitOfWork(pool, publishing=publication) as uow:
        uow.record(Placed(kept))
    with pytest.raises(RuntimeError):
        async with PostgresUnitOfWork(pool, publishing=publication) as uow:
            uow.record(Placed(dropped))
            raise RuntimeError("the state change failed, so must the event")
    rows = await pool.fetch(
        "SELECT key, topic, event_type, payload FROM outbox WHERE key = ANY($1::text[])",
        [kept, dropped],
    )
    assert [(r["key"], r["topic"], r["event_type"]) for r in rows] == [
        (kept, "shop.orders.v1", "shop.events.v1.OrderCreated")  # the topic its proto names
    ]
    assert unwrap(rows[0]["payload"]).envelope.aggregate_id == kept
    # A read-only unit of work has no transaction to publish with.
    async with PostgresUnitOfWork(pool, read_only=True, publishing=publication) as reader:
        with pytest.raises(RuntimeError, match="read-only"):
            reader.record(Placed(kept))

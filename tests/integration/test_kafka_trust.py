"""Kafka lets in only parties with a certificate of the project's CA, and lets each do
only what ops/trust/rights.py grants it; a consumer refuses events a topic's owner
does not publish. Each refusal is checked on the data: nothing landed, nothing moved."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import TopicPartition

from devstack.stack import Stack
from pki.authority import ensure_authority
from shared.messaging.consumer import IdempotentConsumer
from shared.messaging.dead_letter import DeadLetterPublisher
from shared.messaging.envelope import wrap
from shared.messaging.kafka import kafka_producer
from shared.messaging.topics import DEADLETTER, INVENTORY, ORDERS, PAYMENTS, TOPICS
from shared.messaging.unit_of_work import PostgresUnitOfWork
from shared.tls import GATEWAY, ca_file
from shop.events.v1 import inventory_events_pb2, order_events_pb2
from tests.support.kafka import identity, options

pytestmark = pytest.mark.integration

SAGA_TOPICS = (ORDERS, INVENTORY, PAYMENTS)


async def end_offsets(stack: Stack, topics: tuple[str, ...]) -> dict[TopicPartition, int]:
    """Every partition's end, read by the operator."""
    consumer = AIOKafkaConsumer(**options(stack), group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(TOPICS[t])]
        return cast(dict[TopicPartition, int], await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def list_topics(**client: Any) -> list[str]:
    admin = AIOKafkaAdminClient(request_timeout_ms=3000, **client)
    try:
        await admin.start()
        return cast(list[str], await admin.list_topics())
    finally:
        await admin.close()


async def plaintext_api_versions(port: int) -> bytes:
    """What the port answers to a plaintext ApiVersions request (v0, correlation id 1)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        body = b"".join(
            (
                (18).to_bytes(2, "big"),
                (0).to_bytes(2, "big"),
                (1).to_bytes(4, "big"),
                (4).to_bytes(2, "big"),
                b"test",
            )
        )
        writer.write(len(body).to_bytes(4, "big") + body)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(1024)
    finally:
        writer.close()


@pytest.mark.parametrize("listener", ["broker", "controller"])
async def test_a_plaintext_client_gets_a_tls_alert_not_an_answer(
    stack: Stack, listener: str
) -> None:
    port = getattr(stack.profile.ports, f"kafka_{listener}")
    answer = await plaintext_api_versions(port)
    # A TLS record of type alert (21), level fatal (2), instead of Kafka's size-prefixed
    # response carrying correlation id 1.
    assert answer[:1] == b"\x15", answer
    assert answer[5:6] == b"\x02", answer
    if listener == "broker":
        with pytest.raises(KafkaConnectionError):
            await list_topics(bootstrap_servers=stack.kafka_bootstrap)


async def test_a_client_without_a_certificate_of_our_ca_is_refused(
    stack: Stack, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other"
    ensure_authority(other_ca, ["order"])
    # It trusts the broker, but its own certificate (CN=order) is another CA's.
    foreign = ssl.create_default_context(cafile=ca_file(stack.tls_dir))
    foreign.load_cert_chain(other_ca / "order.pem", other_ca / "order-key.pem")
    with pytest.raises(KafkaConnectionError):
        await list_topics(
            bootstrap_servers=stack.kafka_bootstrap, security_protocol="SSL", ssl_context=foreign
        )
    # Without any certificate: the same.
    anonymous = ssl.create_default_context(cafile=ca_file(stack.tls_dir))
    with pytest.raises(KafkaConnectionError):
        await list_topics(
            bootstrap_servers=stack.kafka_bootstrap,
            security_protocol="SSL",
            ssl_context=anonymous,
        )
    # The same call as the operator works: the refusals above are the certificates'.
    assert set(TOPICS) <= set(await list_topics(**options(stack)))


@pytest.fixture
async def producer_as(stack: Stack) -> AsyncIterator[Any]:
    started: list[AIOKafkaProducer] = []

    async def make(name: str) -> AIOKafkaProducer:
        # Not idempotent: an idempotent producer without any WRITE is refused earlier
        # still (InitProducerId: ClusterAuthorizationFailed), before naming a topic.
        producer = AIOKafkaProducer(**options(stack, name), acks="all", request_timeout_ms=5000)
        started.append(producer)
        await producer.start()
        return producer

    yield make
    for producer in started:
        await producer.stop()


@pytest.mark.parametrize("party", ["product", GATEWAY])
async def test_a_party_without_rights_cannot_write_any_saga_topic(
    stack: Stack, producer_as: Any, party: str
) -> None:
    # product publishes nothing; the gateway uses no Kafka at all (no ACL names it).
    before = await end_offsets(stack, SAGA_TOPICS)
    producer = await producer_as(party)
    forged = wrap(order_events_pb2.OrderCreated(order_id=str(uuid.uuid4())), "x")
    for topic in (*SAGA_TOPICS, DEADLETTER):
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topic, forged.SerializeToString())
    assert await end_offsets(stack, SAGA_TOPICS) == before


async def test_the_gateway_reads_no_topic(stack: Stack) -> None:
    # Not in a group of its own name (no group is granted to it) ...
    in_a_group = AIOKafkaConsumer(
        ORDERS, **options(stack, GATEWAY), group_id=GATEWAY, request_timeout_ms=5000
    )
    try:
        with pytest.raises((GroupAuthorizationFailedError, TopicAuthorizationFailedError)):
            await in_a_group.start()
    finally:
        await in_a_group.stop()
    # ... nor without one: Kafka does not even show it the topics (no DESCRIBE on any),
    # which the operator sees.
    assert not set(TOPICS) & set(await list_topics(**options(stack, GATEWAY)))
    assert set(TOPICS) <= set(await list_topics(**options(stack)))


async def test_payment_cannot_forge_an_inventory_reservation(
    stack: Stack, producer_as: Any
) -> None:
    before = await end_offsets(stack, SAGA_TOPICS)
    payment = await producer_as("payment")
    order_id = str(uuid.uuid4())
    forged = wrap(inventory_events_pb2.InventoryReserved(order_id=order_id), order_id)
    with pytest.raises(TopicAuthorizationFailedError):
        await payment.send_and_wait(INVENTORY, forged.SerializeToString(), key=order_id.encode())
    # Not on the topic, so no consumer (payment's own, which would debit the wallet) sees it.
    assert await end_offsets(stack, SAGA_TOPICS) == before


async def test_a_service_reads_its_topics_only_in_its_own_group(stack: Stack) -> None:
    intruder = AIOKafkaConsumer(
        PAYMENTS, **options(stack, "order"), group_id="intruder", request_timeout_ms=5000
    )
    try:
        # Refused while it looks for the group's coordinator (DESCRIBE on the group).
        with pytest.raises(GroupAuthorizationFailedError):
            await intruder.start()
    finally:
        await intruder.stop()
    # Without a group, order may look at the topic (READ on it): the refusal was the group's.
    reader = AIOKafkaConsumer(**options(stack, "order"), group_id=None, request_timeout_ms=5000)
    await reader.start()
    try:
        tp = TopicPartition(PAYMENTS, 0)
        assert tp in await reader.end_offsets([tp])
    finally:
        await reader.stop()
    # product may not read it even in a group of its own name: refused on the topic.
    product = AIOKafkaConsumer(
        PAYMENTS, **options(stack, "product"), group_id="product", request_timeout_ms=5000
    )
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await product.start()
    finally:
        await product.stop()


async def skip_to_end(stack: Stack, group: str, topic: str) -> None:
    """Commits ``group``'s offsets at the topic's end, so it reads only what comes next."""
    ends = await end_offsets(stack, (topic,))
    committer = AIOKafkaConsumer(**options(stack), group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign(list(ends))
        await committer.commit(ends)
    finally:
        await committer.stop()


async def test_an_owner_cannot_pass_off_another_services_event_on_its_own_topic(
    stack: Stack,
) -> None:
    group = f"test-trust-{uuid.uuid4().hex[:6]}"
    await skip_to_end(stack, group, INVENTORY)

    def no_database() -> PostgresUnitOfWork:
        raise AssertionError("a refused event must not reach a handler")

    consumer: IdempotentConsumer[PostgresUnitOfWork] = IdempotentConsumer(
        name=group,
        topics=[INVENTORY],
        bootstrap=stack.kafka_bootstrap,
        identity=identity(stack),
        unit_of_work=no_database,
        handlers={"shop.events.v1.OrderCreated": lambda uow, event: asyncio.sleep(0)},
        dead_letters=DeadLetterPublisher(stack.kafka_bootstrap, identity(stack)),
    )
    dlq = AIOKafkaConsumer(DEADLETTER, **options(stack), group_id=None)
    await dlq.start()
    await dlq.seek_to_end()
    inventory = kafka_producer(stack.kafka_bootstrap, identity(stack, "inventory"))
    await inventory.start()
    await consumer.start()
    try:
        order_id = str(uuid.uuid4())
        passed_off = wrap(order_events_pb2.OrderCreated(order_id=order_id), order_id)
        # The broker accepts it: inventory may write its own topic.
        sent = await inventory.send_and_wait(
            INVENTORY, passed_off.SerializeToString(), key=order_id.encode()
        )
        async with asyncio.timeout(30):
            while True:
                batch = await dlq.getmany(timeout_ms=500)
                letters = [r for rs in batch.values() for r in rs if r.key == order_id.encode()]
                if letters:
                    break
        headers = {k: v.decode() for k, v in letters[0].headers}
        assert letters[0].value == passed_off.SerializeToString()
        assert headers["dlq.error"] == (
            "event type shop.events.v1.OrderCreated is not published on shop.inventory.v1"
        )
        assert headers["dlq.source"] == f"{INVENTORY}/{sent.partition}/{sent.offset}"
        assert headers["dlq.consumer"] == group
        # The source partition moves on: the group's offset passes the refused record.
        watcher = AIOKafkaConsumer(**options(stack), group_id=group, enable_auto_commit=False)
        await watcher.start()
        try:
            async with asyncio.timeout(10):
                tp = TopicPartition(INVENTORY, sent.partition)
                while (await watcher.committed(tp) or 0) <= sent.offset:
                    await asyncio.sleep(0.2)
        finally:
            await watcher.stop()
        assert consumer.dead_lettered == 1 and consumer.handled == 0
    finally:
        await consumer.stop()
        await inventory.stop()
        await dlq.stop()

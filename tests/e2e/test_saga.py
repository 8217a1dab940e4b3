"""The order saga end to end: real services, PostgreSQL, etcd and Kafka, then the audit."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from shared.messaging.topics import DEADLETTER, INVENTORY, ORDERS, PAYMENTS, TOPICS
from tests.e2e.conftest import RunningSystem
from tests.support.kafka import options
from tests.support.saga import (
    funded_buyers,
    new_product,
    place_one_each,
    settled_audit,
    wait_until_terminal,
)

pytestmark = pytest.mark.e2e


async def stock_of(system: RunningSystem, sku: str) -> asyncpg.Record:
    conn = await asyncpg.connect(system.stack.pg_dsn("shop_inventory"))
    try:
        row = await conn.fetchrow("SELECT * FROM stock WHERE sku = $1", sku)
    finally:
        await conn.close()
    assert row is not None
    return row


async def test_flash_sale_sells_exactly_the_stock(system: RunningSystem) -> None:
    product_id, sku = await new_product(system.clients, system.keys, units=50)
    buyers = await funded_buyers(system.clients, system.keys, 500, funds_minor=5_000)
    orders = await place_one_each(buyers, [(product_id, 1)])
    counts = await wait_until_terminal(system.stack, orders)
    assert counts == {"confirmed": 50, "rejected": 450}
    stock = await stock_of(system, sku)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (0, 0, 50)
    report = await settled_audit(system.stack)
    assert report.ok, report.render()


async def test_multi_item_orders_are_all_or_nothing(system: RunningSystem) -> None:
    plenty_id, plenty = await new_product(system.clients, system.keys, units=100)
    scarce_id, scarce = await new_product(system.clients, system.keys, units=5)
    buyers = await funded_buyers(system.clients, system.keys, 20, funds_minor=10_000)
    orders = await place_one_each(buyers, [(plenty_id, 2), (scarce_id, 1)])
    counts = await wait_until_terminal(system.stack, orders)
    assert counts == {"confirmed": 5, "rejected": 15}
    assert (await stock_of(system, plenty))["sold"] == 10  # only the confirmed orders' lines
    assert (await stock_of(system, plenty))["available"] == 90
    assert (await stock_of(system, scarce))["sold"] == 5
    report = await settled_audit(system.stack)
    assert report.ok, report.render()


async def test_poison_message_goes_to_the_dead_letter_topic_and_the_partition_moves_on(
    system: RunningSystem,
) -> None:
    dlq = AIOKafkaConsumer(
        DEADLETTER, **options(system.stack), group_id=None, auto_offset_reset="latest"
    )
    await dlq.start()
    await dlq.seek_to_end()
    producer = AIOKafkaProducer(**options(system.stack))
    await producer.start()
    marker = uuid.uuid4().hex.encode()
    try:
        for partition in range(TOPICS[ORDERS]):  # every partition of the orders topic
            await producer.send_and_wait(
                ORDERS, b"\x00garbage " + marker, key=marker, partition=partition
            )
    finally:
        await producer.stop()
    product_id, _ = await new_product(system.clients, system.keys, units=100)
    buyers = await funded_buyers(system.clients, system.keys, 30, funds_minor=5_000)
    orders = await place_one_each(buyers, [(product_id, 1)])  # orders land on every partition
    assert await wait_until_terminal(system.stack, orders) == {"confirmed": 30}
    dead: list[Any] = []
    try:
        async with asyncio.timeout(20):
            while len(dead) < 2 * TOPICS[ORDERS]:  # inventory's and payment's copies
                for batch in (await dlq.getmany(timeout_ms=200)).values():
                    dead.extend(r for r in batch if r.value.endswith(marker))
    finally:
        await dlq.stop()
    consumers = sorted({dict(r.headers)["dlq.consumer"].decode() for r in dead})
    assert consumers == ["inventory", "payment"]
    assert all(dict(r.headers)["dlq.error"].startswith(b"malformed") for r in dead)
    report = await settled_audit(system.stack)
    assert report.ok, report.render()


async def snapshot(system: RunningSystem) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "shop_inventory": [
            "SELECT * FROM stock ORDER BY sku",
            "SELECT order_id, state FROM reservations ORDER BY order_id",
            "SELECT count(*) FROM outbox",
        ],
        "shop_payment": [
            "SELECT user_id, balance_minor FROM wallets ORDER BY user_id",
            "SELECT count(*) FROM ledger_entries",
            "SELECT count(*) FROM outbox",
        ],
        "shop_order": [
            "SELECT order_id, status FROM orders ORDER BY order_id",
            "SELECT count(*) FROM outbox",
        ],
    }
    result = {}
    for db, sqls in queries.items():
        conn = await asyncpg.connect(system.stack.pg_dsn(db))
        try:
            for sql in sqls:
                result[f"{db}: {sql}"] = [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return result


async def rewind_group(system: RunningSystem, group: str, topics: list[str]) -> None:
    consumer = AIOKafkaConsumer(**options(system.stack), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(TOPICS[t])]
        consumer.assign(partitions)
        await consumer.commit({tp: 0 for tp in partitions})
    finally:
        await consumer.stop()


async def test_replaying_every_topic_from_offset_zero_changes_nothing(
    system: RunningSystem,
) -> None:
    product_id, _ = await new_product(system.clients, system.keys, units=10)
    buyers = await funded_buyers(system.clients, system.keys, 20, funds_minor=5_000)
    await wait_until_terminal(system.stack, await place_one_each(buyers, [(product_id, 1)]))
    assert (await settled_audit(system.stack)).ok
    before = await snapshot(system)

    subscriptions = {
        "inventory": [ORDERS, PAYMENTS],
        "payment": [INVENTORY, ORDERS],
        "order": [INVENTORY, PAYMENTS],
    }
    for service in subscriptions:
        for child in [p for p in system.launcher.processes if p.service == service]:
            child.process.terminate()
            await child.process.wait()
        system.launcher.processes[:] = [
            p for p in system.launcher.processes if p.service != service
        ]
    for service, topics in subscriptions.items():
        await rewind_group(system, service, topics)
        await system.launcher.start_instance(service)
    await system.launcher.wait_ready(system.directory)
    await wait_for_consumers_to_catch_up(system, subscriptions)

    after = await snapshot(system)
    for query, rows in before.items():
        changed = set(after[query]) ^ set(rows)
        assert not changed, f"{query} changed: {sorted(changed, key=str)[:6]}"
    report = await settled_audit(system.stack, settle=0)
    assert report.ok, report.render()


async def wait_for_consumers_to_catch_up(
    system: RunningSystem, subscriptions: dict[str, list[str]]
) -> None:
    async with asyncio.timeout(60):
        for group, topics in subscriptions.items():
            probe = AIOKafkaConsumer(
                **options(system.stack),
                group_id=group,
                enable_auto_commit=False,
            )
            await probe.start()
            try:
                partitions = [TopicPartition(t, p) for t in topics for p in range(TOPICS[t])]
                ends = await probe.end_offsets(partitions)
                while True:
                    committed = {tp: await probe.committed(tp) or 0 for tp in partitions}
                    if all(committed[tp] >= ends[tp] for tp in partitions):
                        break
                    await asyncio.sleep(0.5)
            finally:
                await probe.stop()


async def test_inventory_killed_mid_sale_and_restarted_loses_nothing(
    system: RunningSystem,
) -> None:
    product_id, sku = await new_product(system.clients, system.keys, units=40)
    buyers = await funded_buyers(system.clients, system.keys, 200, funds_minor=5_000)
    placing = asyncio.create_task(place_one_each(buyers, [(product_id, 1)]))
    await asyncio.sleep(0.3)
    for child in [p for p in system.launcher.processes if p.service == "inventory"]:
        child.process.kill()
        await child.process.wait()
        system.launcher.processes.remove(child)
    orders = await placing  # PlaceOrder needs no inventory: the outbox holds the events
    await asyncio.sleep(1.0)
    await system.launcher.start_instance("inventory")
    counts = await wait_until_terminal(system.stack, orders)
    assert counts == {"confirmed": 40, "rejected": 160}
    assert (await stock_of(system, sku))["sold"] == 40
    report = await settled_audit(system.stack)
    assert report.ok, report.render()


async def test_kafka_broker_restart_during_load_loses_nothing(system: RunningSystem) -> None:
    product_id, _ = await new_product(system.clients, system.keys, units=60)
    buyers = await funded_buyers(system.clients, system.keys, 150, funds_minor=5_000)
    first, second = buyers[:75], buyers[75:]
    placing = asyncio.create_task(place_one_each(first, [(product_id, 1)]))
    await asyncio.sleep(0.2)
    await asyncio.to_thread(system.stack.stop, "kafka")
    orders = await placing
    orders += await place_one_each(second, [(product_id, 1)])  # while the broker is down
    await asyncio.to_thread(system.stack.start, "kafka")
    counts = await wait_until_terminal(system.stack, orders, timeout=120)
    assert counts == {"confirmed": 60, "rejected": 90}
    report = await settled_audit(system.stack)
    assert report.ok, report.render()

"""P7: the outbox relay's lag at a fixed rate of events.

Rows are committed to the order service's outbox at ``rate`` per second (in small
statements every 20 ms, as the services' transactions commit them), on a topic of
the bench's own that no consumer reads, so the saga is not disturbed. The running
order instances' relays publish them like any event. A row's lag is from its commit
(``created_at``) to Kafka's acknowledgement of its batch (``sent_at``, stamped with
the clock after the acknowledgement).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from devstack.stack import Stack
from ops.trust.kafka_acls import Acl, create_acls, delete_acls

TOPIC = "bench.relay-lag.v1"
EVENT_TYPE = "bench.RelayProbe"
TICK_SECONDS = 0.02


@contextlib.asynccontextmanager
async def probe_topic(stack: Stack) -> AsyncIterator[None]:
    """The bench's topic for the probe rows, deleted afterwards (the stack may be the tests')."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=stack.kafka_bootstrap,
        **stack.kafka_operator().client_options(),
        client_id="bench",
    )
    # The order service's relay publishes the probe rows: for the bench's length it may
    # (bench-plain's broker has no ACLs at all).
    write = [Acl.allow("order", "WRITE", "TOPIC", TOPIC)] if stack.infra_tls else []
    await admin.start()
    try:
        if TOPIC not in set(await admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(TOPIC, 6, 1)], timeout_ms=30000)
        await create_acls(admin, write)
        yield
        await delete_acls(admin, write)
        await admin.delete_topics([TOPIC], timeout_ms=30000)
    finally:
        await admin.close()


async def relay_lag(stack: Stack, rate: float, seconds: float) -> dict[str, Any]:
    async with probe_topic(stack):
        return await _measure(stack, rate, seconds)


async def _measure(stack: Stack, rate: float, seconds: float) -> dict[str, Any]:
    conn = await asyncpg.connect(stack.pg_dsn("shop_order"))
    try:
        per_tick = max(1, round(rate * TICK_SECONDS))
        ticks = max(1, int(seconds / TICK_SECONDS))
        first_id = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
        start = time.monotonic()
        for tick in range(ticks):
            await asyncio.sleep(max(0.0, start + tick * TICK_SECONDS - time.monotonic()))
            await conn.execute(
                "INSERT INTO outbox (event_id, topic, key, event_type, payload)"
                " SELECT gen_random_uuid(), $1, gen_random_uuid()::text, $2, '\\x00'::bytea"
                " FROM generate_series(1, $3)",
                TOPIC,
                EVENT_TYPE,
                per_tick,
            )
        offered = per_tick * ticks / (time.monotonic() - start)
        deadline = time.monotonic() + 60
        while await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE id > $1 AND event_type = $2 AND sent_at IS NULL",
            first_id,
            EVENT_TYPE,
        ):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        rows = await conn.fetch(
            "SELECT extract(epoch FROM sent_at - created_at) * 1000 AS lag_ms FROM outbox"
            " WHERE id > $1 AND event_type = $2",
            first_id,
            EVENT_TYPE,
        )
        # Any never sent must not outlive their topic: the relay would retry them for good.
        await conn.execute(
            "DELETE FROM outbox WHERE event_type = $1 AND sent_at IS NULL", EVENT_TYPE
        )
    finally:
        await conn.close()
    sent = np.array([float(r["lag_ms"]) for r in rows if r["lag_ms"] is not None])
    figures: dict[str, Any] = {
        "rate": rate,
        "offered_per_second": round(offered, 1),
        "events": len(rows),
        "sent": len(sent),
    }
    if len(sent):
        p50, p99 = np.percentile(sent, [50, 99])
        figures |= {"p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1)}
        figures["max_ms"] = round(float(sent.max()), 1)
    return figures

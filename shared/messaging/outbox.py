"""Writing events into the outbox, inside the caller's transaction."""

from __future__ import annotations

from pathlib import Path

from asyncpg.pool import PoolConnectionProxy
from google.protobuf.message import Message

from shared.messaging import trace_context
from shared.messaging.envelope import wrap

MIGRATIONS = Path(__file__).parent / "migrations"


class Outbox:
    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def add(self, topic: str, payload: Message, aggregate_id: str) -> str:
        """Stages the event; it is published only if the transaction commits."""
        envelope = wrap(payload, aggregate_id)
        await self._conn.execute(
            "INSERT INTO outbox (event_id, topic, key, event_type, payload, traceparent)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            envelope.event_id,
            topic,
            aggregate_id,
            envelope.type,
            envelope.SerializeToString(),
            trace_context.child_of(trace_context.current()),
        )
        return envelope.event_id

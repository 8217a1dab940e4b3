"""Staging events in the outbox, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from asyncpg.pool import PoolConnectionProxy
from google.protobuf.message import Message

from shared.messaging.envelope import wrap
from shared.observability import trace_context

MIGRATIONS = Path(__file__).parent / "migrations"


class Outbox:
    """Collects a transaction's events and writes them with one INSERT at flush.

    One statement per transaction instead of one per event matters when the
    consumer handles hundreds of events in one transaction (a flash sale).
    """

    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn
        self._rows: list[tuple[str, str, str, str, bytes, str | None]] = []

    def add(self, topic: str, payload: Message, aggregate_id: str) -> str:
        """Stages the event; it is published only if the transaction commits."""
        envelope = wrap(payload, aggregate_id)
        traceparent = trace_context.traceparent_for(aggregate_id)
        self._rows.append(
            (
                envelope.event_id,
                topic,
                aggregate_id,
                envelope.type,
                envelope.SerializeToString(),
                traceparent,
            )
        )
        return envelope.event_id

    @property
    def staged(self) -> int:
        return len(self._rows)

    async def flush(self) -> None:
        """Writes what was staged; the unit of work calls this right before commit."""
        if not self._rows:
            return
        columns = list(zip(*self._rows, strict=True))
        await self._conn.execute(
            "INSERT INTO outbox (event_id, topic, key, event_type, payload, traceparent)"
            " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],"
            " $5::bytea[], $6::text[])",
            *columns,
        )
        self._rows.clear()


async def first_traceparents(conn: PoolConnectionProxy, keys: Sequence[str]) -> dict[str, str]:
    """The trace of each aggregate's first event still in the outbox (sent rows are kept
    for an hour): what a later step about it, not caused by an event, continues."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (key) key, traceparent FROM outbox"
        " WHERE key = ANY($1::text[]) AND traceparent IS NOT NULL ORDER BY key, id",
        list(keys),
    )
    return {row["key"]: row["traceparent"] for row in rows}

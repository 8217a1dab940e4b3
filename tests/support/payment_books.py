"""Reading payment's database in its integration tests: rows, outbox events, and the audit.

Only test_payment_saga.py uses it.
"""

from __future__ import annotations

import uuid

import asyncpg
from google.protobuf.message import Message

from services.payment.domain import new_top_up
from services.payment.persistence import PostgresPaymentUnitOfWork
from shared.messaging.topics import PAYMENTS
from shared.money import Money
from shop.events.v1 import envelope_pb2, payment_events_pb2

SUCCEEDED = "shop.events.v1.PaymentSucceeded"
FAILED = "shop.events.v1.PaymentFailed"
REFUNDED = "shop.events.v1.PaymentRefunded"


async def wallet_with(pool: asyncpg.Pool, amount: int) -> uuid.UUID:
    """A new user whose wallet was topped up with ``amount`` the way TopUp books it."""
    user = uuid.uuid4()
    entry = new_top_up(user_id=user, amount=Money(amount, "USD"), idempotency_key="seed")
    async with PostgresPaymentUnitOfWork(pool) as uow:
        await uow.wallets.open(user, "USD")
        assert await uow.ledger.add_once(entry)
        assert await uow.wallets.credit(user, entry.amount) is not None
    return user


async def balance(pool: asyncpg.Pool, user: uuid.UUID) -> int | None:
    value = await pool.fetchval("SELECT balance_minor FROM wallets WHERE user_id = $1", user)
    return None if value is None else int(value)


async def outbox_types(pool: asyncpg.Pool, order_id: uuid.UUID) -> list[str]:
    rows = await pool.fetch(
        "SELECT topic, event_type FROM outbox WHERE key = $1 ORDER BY id", str(order_id)
    )
    assert all(r["topic"] == PAYMENTS for r in rows)
    return [r["event_type"] for r in rows]


async def outbox_payloads(pool: asyncpg.Pool, order_id: uuid.UUID) -> list[Message]:
    rows = await pool.fetch("SELECT payload FROM outbox WHERE key = $1 ORDER BY id", str(order_id))
    messages: list[Message] = []
    for row in rows:
        envelope = envelope_pb2.EventEnvelope.FromString(row["payload"])
        assert envelope.aggregate_id == str(order_id)
        message: Message = {
            SUCCEEDED: payment_events_pb2.PaymentSucceeded,
            FAILED: payment_events_pb2.PaymentFailed,
            REFUNDED: payment_events_pb2.PaymentRefunded,
        }[envelope.type]()
        assert envelope.payload.Unpack(message)
        messages.append(message)
    return messages


async def payment(pool: asyncpg.Pool, order_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM payments WHERE order_id = $1", order_id)


async def state_of(pool: asyncpg.Pool, order_id: uuid.UUID) -> str | None:
    value = await pool.fetchval("SELECT state FROM payments WHERE order_id = $1", order_id)
    return None if value is None else str(value)


async def reason_of(pool: asyncpg.Pool, order_id: uuid.UUID) -> str | None:
    value = await pool.fetchval("SELECT reason FROM payments WHERE order_id = $1", order_id)
    return None if value is None else str(value)


async def ledger_kinds(pool: asyncpg.Pool, order_id: uuid.UUID) -> list[str]:
    rows = await pool.fetch(
        "SELECT kind FROM ledger_entries WHERE order_id = $1 ORDER BY kind", order_id
    )
    return [r["kind"] for r in rows]


async def assert_books_balance(pool: asyncpg.Pool) -> None:
    """The audit, in plain SQL over the whole database."""
    # Every wallet: balance == topups + refunds - charges, and never negative.
    broken = await pool.fetch(
        "SELECT w.user_id, w.balance_minor, coalesce(l.net, 0) AS net FROM wallets w"
        " LEFT JOIN (SELECT user_id, sum(CASE kind WHEN 'charge' THEN -amount_minor"
        "                                 ELSE amount_minor END) AS net"
        "            FROM ledger_entries GROUP BY user_id) l USING (user_id)"
        " WHERE w.balance_minor <> coalesce(l.net, 0) OR w.balance_minor < 0"
    )
    assert broken == [], [dict(r) for r in broken]
    # Every payment record agrees with the ledger rows of its order, and no ledger row of an
    # order lacks a record.
    disagreeing = await pool.fetch(
        "SELECT p.order_id, p.state, l.charges, l.refunds FROM payments p"
        " FULL JOIN (SELECT order_id,"
        "                   count(*) FILTER (WHERE kind = 'charge') AS charges,"
        "                   count(*) FILTER (WHERE kind = 'refund') AS refunds,"
        "                   count(DISTINCT amount_minor) AS amounts"
        "            FROM ledger_entries WHERE order_id IS NOT NULL GROUP BY order_id) l"
        "   USING (order_id)"
        " WHERE p.state IS NULL OR p.state = 'pending'"
        "    OR (p.state = 'charged' AND (l.charges, l.refunds) IS DISTINCT FROM (1, 0))"
        "    OR (p.state = 'refunded' AND (l.charges, l.refunds, l.amounts)"
        "                                  IS DISTINCT FROM (1, 1, 1))"
        "    OR (p.state IN ('failed', 'cancelled') AND l.order_id IS NOT NULL)"
    )
    assert disagreeing == [], [dict(r) for r in disagreeing]
    # The record's booked ids are the ledger rows of its own order.
    mislinked = await pool.fetch(
        "SELECT p.order_id FROM payments p"
        " LEFT JOIN ledger_entries c ON c.entry_id = p.charge_id"
        " LEFT JOIN ledger_entries r ON r.entry_id = p.refund_id"
        " WHERE (p.charge_id IS NOT NULL AND (c.order_id, c.kind, c.amount_minor)"
        "          IS DISTINCT FROM (p.order_id, 'charge', p.amount_minor))"
        "    OR (p.refund_id IS NOT NULL AND (r.order_id, r.kind, r.amount_minor)"
        "          IS DISTINCT FROM (p.order_id, 'refund', p.amount_minor))"
    )
    assert mislinked == [], [dict(r) for r in mislinked]

"""Payment's saga handlers against the real PostgreSQL: charge once, refund once, any order.

The handlers are called directly, each delivery in its own unit of work (as
the consumer would run it), with a fresh envelope unless the test redelivers
one; so these tests do not lean on processed_events to drop duplicates.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
import pytest
import pytest_asyncio
from google.protobuf.message import Message

from devstack.stack import Stack
from services.payment import main
from services.payment.authorizer import ProviderAuthorizer
from services.payment.domain import (
    DECLINED_BY_PROVIDER,
    INSUFFICIENT_FUNDS,
    EntryKind,
    new_top_up,
)
from services.payment.event_handlers import PaymentEventHandlers
from services.payment.knobs import PaymentKnobs
from services.payment.main import SERVICE
from services.payment.persistence import PaymentUnitOfWork
from services.payment.provider import PaymentProviderSimulator
from services.payment.settings import PaymentSettings
from shared.config.center import ConfigCenter
from shared.db.pool import create_pool
from shared.errors import InvalidArgument
from shared.messaging.envelope import Event, wrap
from shared.messaging.runtime import Subscriptions
from shared.messaging.topics import PAYMENTS
from shared.money import Money
from shared.service import knob_defaults
from shop.common.v1 import money_pb2
from shop.events.v1 import envelope_pb2, inventory_events_pb2, order_events_pb2, payment_events_pb2
from tests.support.services import recreate_database

pytestmark = pytest.mark.integration

SUCCEEDED = "shop.events.v1.PaymentSucceeded"
FAILED = "shop.events.v1.PaymentFailed"
REFUNDED = "shop.events.v1.PaymentRefunded"

Handler = Callable[[PaymentUnitOfWork, Event], Awaitable[None]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dsn(stack: Stack) -> str:
    database = await recreate_database(stack, "payment_saga")
    await SERVICE.migrate(PaymentSettings(pg_dsn=database))
    return database


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    db = await create_pool(dsn, max_size=40)
    yield db
    await db.close()


def handlers_with(**provider: Any) -> PaymentEventHandlers:
    return PaymentEventHandlers(ProviderAuthorizer(PaymentProviderSimulator(**provider)))


@pytest.fixture
def saga() -> PaymentEventHandlers:
    # The default latency, so concurrent duplicates really overlap around the provider call.
    return PaymentEventHandlers(
        ProviderAuthorizer(PaymentProviderSimulator(latency_ms=2, failure_rate=0.0))
    )


# --- helpers ------------------------------------------------------------------------------------


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency="USD")


def reserved(
    order_id: uuid.UUID, user_id: uuid.UUID, amount: int, currency: str = "USD"
) -> inventory_events_pb2.InventoryReserved:
    return inventory_events_pb2.InventoryReserved(
        order_id=str(order_id),
        user_id=str(user_id),
        total=money_pb2.Money(amount_minor=amount, currency=currency),
    )


def cancelled(
    order_id: uuid.UUID, user_id: uuid.UUID, reason: str = "cancelled by owner"
) -> order_events_pb2.OrderCancelled:
    return order_events_pb2.OrderCancelled(
        order_id=str(order_id), user_id=str(user_id), reason=reason
    )


def envelope_of(payload: Message) -> envelope_pb2.EventEnvelope:
    return wrap(payload, cast(Any, payload).order_id)


async def deliver(
    pool: asyncpg.Pool,
    handler: Handler,
    payload: Message,
    envelope: envelope_pb2.EventEnvelope | None = None,
) -> None:
    """One delivery as the consumer makes it: the provider asked first (the preparer), then
    the handler in its own transaction; a fresh event id unless ``envelope`` is given."""
    event = Event(envelope=envelope or envelope_of(payload), payload=payload)
    owner = getattr(handler, "__self__", None)
    if isinstance(owner, PaymentEventHandlers) and isinstance(
        payload, inventory_events_pb2.InventoryReserved
    ):
        await owner.authorizer.authorize([event])
    async with PaymentUnitOfWork(pool) as uow:
        await handler(uow, event)


async def wallet_with(pool: asyncpg.Pool, amount: int) -> uuid.UUID:
    """A new user whose wallet was topped up with ``amount`` the way TopUp books it."""
    user = uuid.uuid4()
    entry = new_top_up(user_id=user, amount=Money(amount, "USD"), idempotency_key="seed")
    async with PaymentUnitOfWork(pool) as uow:
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


# --- the happy path and redelivery --------------------------------------------------------------


async def test_reservation_charges_the_wallet_once(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 1500))

    assert await balance(pool, user) == 3500
    record = await payment(pool, order)
    assert record is not None
    assert (record["state"], record["user_id"], record["amount_minor"], record["currency"]) == (
        "charged",
        user,
        1500,
        "USD",
    )
    assert await ledger_kinds(pool, order) == ["charge"]
    assert await outbox_types(pool, order) == [SUCCEEDED]
    [succeeded] = await outbox_payloads(pool, order)
    assert isinstance(succeeded, payment_events_pb2.PaymentSucceeded)
    assert succeeded.order_id == str(order)
    assert succeeded.charge_id == str(record["charge_id"])
    assert (succeeded.amount.amount_minor, succeeded.amount.currency) == (1500, "USD")
    await assert_books_balance(pool)


async def test_redelivery_charges_nothing_more(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    event = reserved(order, user, 1500)
    envelope = envelope_of(event)
    await deliver(pool, saga.on_inventory_reserved, event, envelope)
    before = await payment(pool, order)

    await deliver(pool, saga.on_inventory_reserved, event, envelope)  # the same record again
    await deliver(pool, saga.on_inventory_reserved, event)  # re-emitted with a new event id
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 99))  # other amount

    assert await balance(pool, user) == 3500
    assert await payment(pool, order) == before
    assert await ledger_kinds(pool, order) == ["charge"]
    assert await outbox_types(pool, order) == [SUCCEEDED]
    await assert_books_balance(pool)


async def test_one_transaction_holding_a_batch_with_a_duplicate(pool, saga) -> None:
    """The consumer applies many events in one transaction; a duplicate inside it is harmless."""
    user = await wallet_with(pool, 1000)
    orders = [uuid.uuid4() for _ in range(3)]
    payloads = [reserved(o, user, 200) for o in orders] + [reserved(orders[0], user, 200)]
    events = [Event(envelope_of(payload), payload) for payload in payloads]
    await saga.authorizer.authorize(events)  # the consumer's preparer, before the transaction
    async with PaymentUnitOfWork(pool) as uow:
        for event in events:
            await saga.on_inventory_reserved(uow, event)
    assert await balance(pool, user) == 400
    for order in orders:
        assert await outbox_types(pool, order) == [SUCCEEDED]
    await assert_books_balance(pool)


async def test_concurrent_duplicate_reservations_charge_once(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    event = reserved(order, user, 1500)
    await asyncio.gather(*(deliver(pool, saga.on_inventory_reserved, event) for _ in range(10)))

    assert await balance(pool, user) == 3500
    assert await state_of(pool, order) == "charged"
    assert await ledger_kinds(pool, order) == ["charge"]
    assert await outbox_types(pool, order) == [SUCCEEDED]
    await assert_books_balance(pool)


async def test_concurrent_orders_of_one_wallet_never_overdraw(pool, saga) -> None:
    user = await wallet_with(pool, 550)
    orders = [uuid.uuid4() for _ in range(10)]
    await asyncio.gather(
        *(deliver(pool, saga.on_inventory_reserved, reserved(o, user, 100)) for o in orders)
    )

    states = [await state_of(pool, o) for o in orders]
    assert Counter(states) == {"charged": 5, "failed": 5}
    assert await balance(pool, user) == 50
    for order, state in zip(orders, states, strict=True):
        assert await outbox_types(pool, order) == [SUCCEEDED if state == "charged" else FAILED]
    await assert_books_balance(pool)


# --- failures -----------------------------------------------------------------------------------


async def test_insufficient_funds_fails_and_takes_nothing(pool, saga) -> None:
    user, order = await wallet_with(pool, 1499), uuid.uuid4()
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 1500))

    assert await balance(pool, user) == 1499
    record = await payment(pool, order)
    assert record is not None
    assert (record["state"], record["reason"], record["charge_id"]) == (
        "failed",
        INSUFFICIENT_FUNDS,
        None,
    )
    assert await ledger_kinds(pool, order) == []
    assert await outbox_types(pool, order) == [FAILED]
    [failed] = await outbox_payloads(pool, order)
    assert isinstance(failed, payment_events_pb2.PaymentFailed)
    assert (failed.order_id, failed.reason) == (str(order), INSUFFICIENT_FUNDS)

    # Topping up afterwards does not revive the order: redelivery stays failed.
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 1))
    assert await state_of(pool, order) == "failed"
    assert await outbox_types(pool, order) == [FAILED]
    await assert_books_balance(pool)


async def test_no_wallet_is_insufficient_funds_and_opens_none(pool, saga) -> None:
    user, order = uuid.uuid4(), uuid.uuid4()
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 10))
    assert await balance(pool, user) is None
    assert await reason_of(pool, order) == INSUFFICIENT_FUNDS
    assert await outbox_types(pool, order) == [FAILED]
    await assert_books_balance(pool)


async def test_other_currency_fails_with_its_reason(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 10, currency="EUR"))
    assert await balance(pool, user) == 5000
    assert await reason_of(pool, order) == "wallet is kept in USD, not EUR"
    assert await outbox_types(pool, order) == [FAILED]
    await assert_books_balance(pool)


async def test_provider_decline_fails_even_with_funds(pool) -> None:
    declining = PaymentEventHandlers(
        ProviderAuthorizer(PaymentProviderSimulator(latency_ms=0, failure_rate=1.0))
    )
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    await deliver(pool, declining.on_inventory_reserved, reserved(order, user, 1500))
    await deliver(pool, declining.on_inventory_reserved, reserved(order, user, 1500))

    assert await balance(pool, user) == 5000
    record = await payment(pool, order)
    assert record is not None
    assert (record["state"], record["reason"]) == ("failed", DECLINED_BY_PROVIDER)
    assert await outbox_types(pool, order) == [FAILED]
    [failed] = await outbox_payloads(pool, order)
    assert isinstance(failed, payment_events_pb2.PaymentFailed)
    assert failed.reason == DECLINED_BY_PROVIDER
    await assert_books_balance(pool)


async def test_declines_are_the_predicted_orders(pool) -> None:
    provider = PaymentProviderSimulator(latency_ms=0, failure_rate=0.5, seed=2024)
    handlers = PaymentEventHandlers(ProviderAuthorizer(provider))
    user = await wallet_with(pool, 10_000)
    orders = [uuid.uuid4() for _ in range(30)]
    await asyncio.gather(
        *(deliver(pool, handlers.on_inventory_reserved, reserved(o, user, 100)) for o in orders)
    )
    declined = {o for o in orders if provider.declines(o)}
    assert 0 < len(declined) < len(orders)
    for order in orders:
        record = await payment(pool, order)
        assert record is not None
        expected = ("failed", DECLINED_BY_PROVIDER) if order in declined else ("charged", None)
        assert (record["state"], record["reason"]) == expected
    assert await balance(pool, user) == 10_000 - 100 * (len(orders) - len(declined))
    await assert_books_balance(pool)


async def test_unreadable_payload_raises_and_writes_nothing(pool, saga) -> None:
    """Not stale but broken: raising sends it to retries and then the dead-letter topic."""
    user = await wallet_with(pool, 5000)
    counts = [
        await pool.fetchval(f"SELECT count(*) FROM {t}")
        for t in ("payments", "ledger_entries", "outbox")
    ]
    broken = [
        (
            saga.on_inventory_reserved,
            inventory_events_pb2.InventoryReserved(
                order_id="not-a-uuid", user_id=str(user), total=usd(10)
            ),
        ),
        (
            saga.on_inventory_reserved,
            inventory_events_pb2.InventoryReserved(
                order_id=str(uuid.uuid4()), user_id=str(user), total=usd(0)
            ),
        ),
        (
            saga.on_inventory_reserved,
            inventory_events_pb2.InventoryReserved(
                order_id=str(uuid.uuid4()), user_id="", total=usd(10)
            ),
        ),
        (saga.on_order_cancelled, order_events_pb2.OrderCancelled(order_id="")),
    ]
    for handler, payload in broken:
        with pytest.raises(InvalidArgument):
            await deliver(pool, handler, payload, wrap(payload, "x"))
    assert counts == [
        await pool.fetchval(f"SELECT count(*) FROM {t}")
        for t in ("payments", "ledger_entries", "outbox")
    ]
    assert await balance(pool, user) == 5000


# --- compensation -------------------------------------------------------------------------------


async def test_cancel_after_charge_refunds_once(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 1500))
    cancel = cancelled(order, user, "saga timeout")
    envelope = envelope_of(cancel)
    await deliver(pool, saga.on_order_cancelled, cancel, envelope)

    assert await balance(pool, user) == 5000
    record = await payment(pool, order)
    assert record is not None
    assert (record["state"], record["reason"]) == ("refunded", "saga timeout")
    assert await ledger_kinds(pool, order) == ["charge", "refund"]
    assert await outbox_types(pool, order) == [SUCCEEDED, REFUNDED]
    refunded = (await outbox_payloads(pool, order))[1]
    assert isinstance(refunded, payment_events_pb2.PaymentRefunded)
    assert (refunded.order_id, refunded.amount.amount_minor) == (str(order), 1500)

    # Cancel twice (redelivered, and re-emitted), then a stale reservation: nothing moves.
    await deliver(pool, saga.on_order_cancelled, cancel, envelope)
    await deliver(pool, saga.on_order_cancelled, cancelled(order, user))
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 1500))
    assert await balance(pool, user) == 5000
    assert await payment(pool, order) == record
    assert await ledger_kinds(pool, order) == ["charge", "refund"]
    assert await outbox_types(pool, order) == [SUCCEEDED, REFUNDED]
    await assert_books_balance(pool)


async def test_concurrent_cancels_refund_once(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 1500))
    await asyncio.gather(
        *(deliver(pool, saga.on_order_cancelled, cancelled(order, user)) for _ in range(10))
    )
    assert await balance(pool, user) == 5000
    assert await ledger_kinds(pool, order) == ["charge", "refund"]
    assert await outbox_types(pool, order) == [SUCCEEDED, REFUNDED]
    await assert_books_balance(pool)


async def test_cancel_before_reservation_blocks_the_charge(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    await deliver(pool, saga.on_order_cancelled, cancelled(order, user, "cancelled by owner"))
    record = await payment(pool, order)
    assert record is not None
    assert (record["state"], record["amount_minor"], record["reason"]) == (
        "cancelled",
        None,
        "cancelled by owner",
    )
    assert await outbox_types(pool, order) == []  # a tombstone announces nothing

    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 1500))
    await deliver(pool, saga.on_order_cancelled, cancelled(order, user))
    assert await balance(pool, user) == 5000
    assert await payment(pool, order) == record
    assert await ledger_kinds(pool, order) == []
    assert await outbox_types(pool, order) == []
    await assert_books_balance(pool)


async def test_cancel_before_reservation_without_a_wallet(pool, saga) -> None:
    user, order = uuid.uuid4(), uuid.uuid4()
    await deliver(pool, saga.on_order_cancelled, cancelled(order, user))
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 1500))
    assert await state_of(pool, order) == "cancelled"
    assert await balance(pool, user) is None
    assert await outbox_types(pool, order) == []


@pytest.mark.parametrize("failure", ["insufficient", "declined"])
async def test_cancel_after_failure_changes_nothing(pool, failure: str) -> None:
    rate = 1.0 if failure == "declined" else 0.0
    handlers = PaymentEventHandlers(
        ProviderAuthorizer(PaymentProviderSimulator(latency_ms=0, failure_rate=rate))
    )
    user, order = await wallet_with(pool, 100), uuid.uuid4()
    await deliver(pool, handlers.on_inventory_reserved, reserved(order, user, 1500))
    before = await payment(pool, order)
    assert before is not None and before["state"] == "failed"

    await deliver(pool, handlers.on_order_cancelled, cancelled(order, user))
    assert await payment(pool, order) == before
    assert await balance(pool, user) == 100
    assert await ledger_kinds(pool, order) == []
    assert await outbox_types(pool, order) == [FAILED]
    await assert_books_balance(pool)


async def test_reservation_and_cancel_racing_settle_consistently(pool) -> None:
    """Across topics there is no order: whichever wins, the wallet ends where it started."""
    saga = PaymentEventHandlers(
        ProviderAuthorizer(PaymentProviderSimulator(latency_ms=0, failure_rate=0.0))
    )
    user = await wallet_with(pool, 100_000)
    orders = [uuid.uuid4() for _ in range(30)]

    async def cancel_after(delay: float, order: uuid.UUID) -> None:
        # Staggered so that some cancels beat their reservation and some come after it.
        await asyncio.sleep(delay)
        await deliver(pool, saga.on_order_cancelled, cancelled(order, user))

    await asyncio.gather(
        *(
            delivery
            for i, order in enumerate(orders)
            for delivery in (
                deliver(pool, saga.on_inventory_reserved, reserved(order, user, 700)),
                cancel_after((i % 6) * 0.002, order),
            )
        )
    )

    assert await balance(pool, user) == 100_000
    for order in orders:
        record = await payment(pool, order)
        assert record is not None
        if record["state"] == "refunded":
            assert await ledger_kinds(pool, order) == ["charge", "refund"]
            assert await outbox_types(pool, order) == [SUCCEEDED, REFUNDED]
        else:
            assert record["state"] == "cancelled"
            assert await ledger_kinds(pool, order) == []
            assert await outbox_types(pool, order) == []
    await assert_books_balance(pool)


# --- the schema's second guard ------------------------------------------------------------------


async def test_a_pending_claim_cannot_be_committed(pool) -> None:
    order = uuid.uuid4()
    with pytest.raises(asyncpg.CheckViolationError, match="still pending"):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO payments (order_id, user_id, state, amount_minor, currency)"
                " VALUES ($1, $2, 'pending', 10, 'USD')",
                order,
                uuid.uuid4(),
            )
    assert await payment(pool, order) is None


@pytest.mark.parametrize(
    "row",
    [
        "('charged', 10, 'USD', NULL)",  # a charge with no ledger row
        "('failed', 10, 'USD', NULL)",  # a failure that does not say why
        "('refunded', 10, 'USD', 'x')",  # a refund with no ledger rows
        "('charged', NULL, NULL, NULL)",  # a charge of no amount
        "('settled', 10, 'USD', 'x')",  # no such state
    ],
)
async def test_inconsistent_records_are_refused(pool, row: str) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO payments (order_id, user_id, state, amount_minor, currency, reason)"
            f" SELECT $1, $2, s, a::bigint, c, r FROM (VALUES {row}) AS v (s, a, c, r)",
            uuid.uuid4(),
            uuid.uuid4(),
        )


async def test_the_ledger_refuses_a_second_charge_or_refund_of_an_order(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    await deliver(pool, saga.on_inventory_reserved, reserved(order, user, 100))
    await deliver(pool, saga.on_order_cancelled, cancelled(order, user))
    for kind in (EntryKind.CHARGE, EntryKind.REFUND):
        with pytest.raises(asyncpg.UniqueViolationError):
            await pool.execute(
                "INSERT INTO ledger_entries (entry_id, user_id, kind, amount_minor, currency,"
                " order_id) VALUES ($1, $2, $3, 100, 'USD', $4)",
                uuid.uuid4(),
                user,
                kind.value,
                order,
            )
    await assert_books_balance(pool)


# --- wiring -------------------------------------------------------------------------------------


async def test_main_hands_the_saga_to_messaging(
    dsn: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What bindings() gives run_messaging, without joining the shared Kafka topics."""
    given: list[Subscriptions[PaymentUnitOfWork] | None] = []

    @asynccontextmanager
    async def run_messaging(
        settings: PaymentSettings,
        db: asyncpg.Pool,
        uow: Any,
        subscriptions: Subscriptions[PaymentUnitOfWork] | None = None,
    ) -> AsyncIterator[None]:
        given.append(subscriptions)
        yield

    monkeypatch.setattr(main, "run_messaging", run_messaging)
    settings = PaymentSettings(pg_dsn=dsn, provider_latency_ms=0, provider_failure_rate=1.0)
    # No document in etcd: the settings are the knobs' defaults.
    config = ConfigCenter("payment", knob_defaults(settings, PaymentKnobs), knobs=PaymentKnobs)
    async with main.bindings(settings, config) as bindings:
        assert [b.full_name for b in bindings] == ["shop.payment.v1.PaymentService"]
    [wired] = given
    assert wired is not None
    # The provider comes from the settings: a failure rate of 1 declines this order.
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    handler = wired.handlers["shop.events.v1.InventoryReserved"]
    await deliver(pool, handler, reserved(order, user, 100))
    assert await reason_of(pool, order) == DECLINED_BY_PROVIDER


async def test_a_failing_provider_that_loses_replies_still_charges_each_order_once(pool) -> None:
    """Errors before charging and replies lost after it, each retried with the same key:
    every order ends charged once, its wallet debited once, one PaymentSucceeded."""
    provider = PaymentProviderSimulator(latency_ms=1, seed=77, error_rate=0.3, lost_reply_rate=0.3)
    handlers = PaymentEventHandlers(ProviderAuthorizer(provider, attempts=30))
    user = await wallet_with(pool, 10_000)
    orders = [uuid.uuid4() for _ in range(20)]
    for order in orders:
        await deliver(pool, handlers.on_inventory_reserved, reserved(order, user, 100))
        await deliver(pool, handlers.on_inventory_reserved, reserved(order, user, 100))  # again
    assert all(provider.charges[o] == 1 for o in orders)
    assert await balance(pool, user) == 10_000 - 100 * len(orders)
    for order in orders:
        assert await outbox_types(pool, order) == [SUCCEEDED]
    await assert_books_balance(pool)


async def test_a_provider_outage_books_nothing_until_it_answers(pool) -> None:
    provider = PaymentProviderSimulator(latency_ms=0, error_rate=1.0)
    handlers = PaymentEventHandlers(ProviderAuthorizer(provider, attempts=2))
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    with pytest.raises(ConnectionError):  # an outage to the consumer: re-read, not dead-lettered
        await deliver(pool, handlers.on_inventory_reserved, reserved(order, user, 1500))
    assert await payment(pool, order) is None
    assert await balance(pool, user) == 5000
    provider.error_rate = 0.0
    await deliver(pool, handlers.on_inventory_reserved, reserved(order, user, 1500))
    assert await balance(pool, user) == 3500
    assert provider.charges[order] == 1

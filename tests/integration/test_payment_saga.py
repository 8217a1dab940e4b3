"""Payment's saga against the real PostgreSQL: what only a database proves.

The saga's rules (charge once, refund once, tombstones, any arrival order, the
provider's answers) are proven without a database in tests/unit/payment; here are
the row locks and claims under concurrency, the schema's constraints, the outbox
rows the PostgreSQL unit of work writes, and the SQL's own conditions.

The use cases are called directly, each delivery in its own unit of work (as the
consumer would run it), so these tests do not lean on processed_events to drop
duplicates.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from google.protobuf.message import Message

from devstack.stack import Stack
from services.payment import main, use_cases
from services.payment.adapters.authorizer import ProviderAuthorizer
from services.payment.adapters.provider import PaymentProviderSimulator
from services.payment.domain import DECLINED_BY_PROVIDER, EntryKind
from services.payment.knobs import PaymentKnobs
from services.payment.main import SERVICE
from services.payment.persistence import PostgresPaymentUnitOfWork
from services.payment.settings import PaymentSettings
from shared.config.center import ConfigCenter
from shared.db.pool import create_pool
from shared.messaging.envelope import Event, wrap
from shared.messaging.subscriptions import Subscriptions
from shared.service import knob_defaults
from shop.events.v1 import inventory_events_pb2, order_events_pb2, payment_events_pb2
from tests.support.payment_books import (
    FAILED,
    REFUNDED,
    SUCCEEDED,
    assert_books_balance,
    balance,
    ledger_kinds,
    outbox_payloads,
    outbox_types,
    payment,
    reason_of,
    state_of,
    wallet_with,
)
from tests.support.payment_events import cancelled, reserved
from tests.support.services import recreate_database

pytestmark = pytest.mark.integration


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


@pytest.fixture
def saga() -> ProviderAuthorizer:
    # The default latency, so concurrent duplicates really overlap around the provider call.
    return ProviderAuthorizer(PaymentProviderSimulator(latency_ms=2, failure_rate=0.0))


# --- helpers ------------------------------------------------------------------------------------


async def deliver(pool: asyncpg.Pool, authorizer: ProviderAuthorizer, message: Message) -> None:
    """One delivery as the consumer makes it: the provider asked first (the preparer), then
    the use case in its own transaction."""
    if isinstance(message, inventory_events_pb2.InventoryReserved):
        await authorizer.authorize([message])
        async with PostgresPaymentUnitOfWork(pool) as uow:
            await use_cases.charge(uow, message, answers=authorizer)
    else:
        assert isinstance(message, order_events_pb2.OrderCancelled)
        async with PostgresPaymentUnitOfWork(pool) as uow:
            await use_cases.refund_on_cancel(uow, message)


# --- claims and row locks under concurrency -----------------------------------------------------


async def test_concurrent_duplicate_reservations_charge_once(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    event = reserved(order, user, 1500)
    await asyncio.gather(*(deliver(pool, saga, event) for _ in range(10)))

    assert await balance(pool, user) == 3500
    assert await state_of(pool, order) == "charged"
    assert await ledger_kinds(pool, order) == ["charge"]
    assert await outbox_types(pool, order) == [SUCCEEDED]
    await assert_books_balance(pool)


async def test_concurrent_orders_of_one_wallet_never_overdraw(pool, saga) -> None:
    user = await wallet_with(pool, 550)
    orders = [uuid.uuid4() for _ in range(10)]
    await asyncio.gather(*(deliver(pool, saga, reserved(o, user, 100)) for o in orders))

    states = [await state_of(pool, o) for o in orders]
    assert Counter(states) == {"charged": 5, "failed": 5}
    assert await balance(pool, user) == 50
    for order, state in zip(orders, states, strict=True):
        assert await outbox_types(pool, order) == [SUCCEEDED if state == "charged" else FAILED]
    await assert_books_balance(pool)


# --- what the SQL books, and the outbox rows the unit of work writes ---------------------------


async def test_a_charge_and_its_refund_are_booked_with_their_events(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    await deliver(pool, saga, reserved(order, user, 1500))
    charged = await payment(pool, order)
    assert charged is not None
    assert (charged["state"], charged["user_id"], charged["amount_minor"]) == (
        "charged",
        user,
        1500,
    )
    assert await balance(pool, user) == 3500
    await deliver(pool, saga, cancelled(order, user, "saga timeout"))

    assert await balance(pool, user) == 5000
    record = await payment(pool, order)
    assert record is not None
    assert (record["state"], record["reason"]) == ("refunded", "saga timeout")
    assert record["charge_id"] == charged["charge_id"]
    assert await ledger_kinds(pool, order) == ["charge", "refund"]
    assert await outbox_types(pool, order) == [SUCCEEDED, REFUNDED]
    succeeded, refunded = await outbox_payloads(pool, order)
    assert isinstance(succeeded, payment_events_pb2.PaymentSucceeded)
    assert succeeded.charge_id == str(charged["charge_id"])
    assert isinstance(refunded, payment_events_pb2.PaymentRefunded)
    assert (refunded.order_id, refunded.amount.amount_minor) == (str(order), 1500)
    await assert_books_balance(pool)


async def test_a_debit_in_another_currency_takes_nothing(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    await deliver(pool, saga, reserved(order, user, 10, currency="EUR"))
    assert await balance(pool, user) == 5000
    assert await reason_of(pool, order) == "wallet is kept in USD, not EUR"
    assert await outbox_types(pool, order) == [FAILED]
    await assert_books_balance(pool)


async def test_concurrent_cancels_refund_once(pool, saga) -> None:
    user, order = await wallet_with(pool, 5000), uuid.uuid4()
    await deliver(pool, saga, reserved(order, user, 1500))
    await asyncio.gather(*(deliver(pool, saga, cancelled(order, user)) for _ in range(10)))
    assert await balance(pool, user) == 5000
    assert await ledger_kinds(pool, order) == ["charge", "refund"]
    assert await outbox_types(pool, order) == [SUCCEEDED, REFUNDED]
    await assert_books_balance(pool)


async def test_reservation_and_cancel_racing_settle_consistently(pool) -> None:
    """Across topics there is no order: whichever wins, the wallet ends where it started."""
    saga = ProviderAuthorizer(PaymentProviderSimulator(latency_ms=0, failure_rate=0.0))
    user = await wallet_with(pool, 100_000)
    orders = [uuid.uuid4() for _ in range(30)]

    async def cancel_after(delay: float, order: uuid.UUID) -> None:
        # Staggered so that some cancels beat their reservation and some come after it.
        await asyncio.sleep(delay)
        await deliver(pool, saga, cancelled(order, user))

    await asyncio.gather(
        *(
            delivery
            for i, order in enumerate(orders)
            for delivery in (
                deliver(pool, saga, reserved(order, user, 700)),
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
    await deliver(pool, saga, reserved(order, user, 100))
    await deliver(pool, saga, cancelled(order, user))
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
    given: list[Subscriptions[PostgresPaymentUnitOfWork] | None] = []

    @asynccontextmanager
    async def run_messaging(
        settings: PaymentSettings,
        db: asyncpg.Pool,
        uow: Any,
        subscriptions: Subscriptions[PostgresPaymentUnitOfWork] | None = None,
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
    message = reserved(order, user, 100)
    event = Event(envelope=wrap(message, str(order)), payload=message)
    name = "shop.events.v1.InventoryReserved"
    await wired.preparers[name]([event])
    async with PostgresPaymentUnitOfWork(pool) as uow:
        await wired.handlers[name](uow, event)
    assert await reason_of(pool, order) == DECLINED_BY_PROVIDER

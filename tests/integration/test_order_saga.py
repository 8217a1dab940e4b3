"""The order's side of the saga on the real PostgreSQL (and Kafka, etcd): what only a real
database, broker or server proves. A batch of events in one transaction, the running
service consuming its topics, CancelOrder racing the saga on the order's row lock, the
saga timeout shared by several instances (SKIP LOCKED), and WatchOrder over the wire: each
saga step the running service hears on Kafka, and its three ways of ending early. The
rules themselves (each outcome and step, redeliveries, events out of order, cancelling
twice) are unit tests: tests/unit/order/test_saga_use_cases.py, test_saga_steps.py.

Orders are written straight into the database (no PlaceOrder, so no OrderCreated reaches
the shared test Kafka, where another engineer's inventory service could settle them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf.message import Message

from devstack.stack import Stack
from services.order.adapters.watch_hub import OrderStatusHub
from services.order.domain import (
    CANCELLED_BY_CUSTOMER,
    SAGA_TIMED_OUT,
    CatalogEntry,
    Order,
    OrderStatus,
    order_request,
    place_order,
)
from services.order.main import SERVICE as ORDER
from services.order.persistence import PostgresOrderUnitOfWork, unit_of_work_factory
from services.order.subscriptions import SUBSCRIPTIONS
from shared.auth.identity import Role
from shared.messaging.envelope import Event, topic_of, unwrap, wrap
from shared.messaging.kafka import KafkaIdentity, kafka_producer
from shared.messaging.topics import ORDERS
from shared.messaging.unit_of_work import UnitOfWorkFactory
from shared.money import Money
from shop.common.v1 import money_pb2
from shop.events.v1 import inventory_events_pb2, order_events_pb2, payment_events_pb2
from shop.order.v1 import order_pb2 as pb
from shop.order.v1 import order_pb2_grpc
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys, bearer

pytestmark = pytest.mark.integration

C = grpc.StatusCode
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # (missing from grpc-stubs)
CANCELLED_EVENT = "shop.events.v1.OrderCancelled"
# The main instance must not time out the tests' orders; one test runs its own fast ones.
NO_TIMEOUT = {"saga_timeout_seconds": 3600}


@dataclass
class Saga:
    stack: Stack
    keys: TestKeys
    order: RunningService
    orders: Any  # OrderServiceStub on an aio channel
    pool: asyncpg.Pool
    uow: UnitOfWorkFactory[PostgresOrderUnitOfWork]

    def token(self, user_id: uuid.UUID) -> tuple[tuple[str, str], ...]:
        return bearer(self.keys.token(Role.CUSTOMER, user_id=user_id))

    def admin(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.keys.token(Role.ADMIN))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def saga(stack: Stack, keys: TestKeys) -> AsyncIterator[Saga]:
    await recreate_database(stack, "order")
    async with run_service(ORDER, stack, keys, **NO_TIMEOUT) as order:
        pool = await asyncpg.create_pool(order.dsn, min_size=2, max_size=40)
        try:
            stub = order_pb2_grpc.OrderServiceStub(order.channel)
            yield Saga(stack, keys, order, stub, pool, unit_of_work_factory(pool))
        finally:
            await pool.close()


# --- helpers ------------------------------------------------------------------------------


async def new_order(
    saga: Saga,
    user_id: uuid.UUID | None = None,
    *,
    age: timedelta = timedelta(0),
    quantity: int = 2,
) -> Order:
    """A PENDING order stored as PlaceOrder would, ``age`` old, without its OrderCreated."""
    entry = CatalogEntry(uuid.uuid4(), f"S-{uuid.uuid4().hex[:8].upper()}", Money(500, "USD"), True)
    request = order_request(f"k-{uuid.uuid4().hex}", [(str(entry.product_id), quantity)])
    order = place_order(
        user_id=user_id or uuid.uuid4(), request=request, catalog={entry.product_id: entry}
    )
    placed_at = datetime.now(UTC) - age
    order = replace(order, created_at=placed_at, updated_at=placed_at)
    async with saga.uow() as uow:
        return await uow.orders.add(order)


def event(payload: Message, order_id: uuid.UUID | str) -> Event:
    return Event(envelope=wrap(payload, str(order_id)), payload=payload)


# What inventory and payment decide about an order: the events the order subscribes to.
Outcome = (
    inventory_events_pb2.InventoryCommitted
    | inventory_events_pb2.InventoryRejected
    | payment_events_pb2.PaymentFailed
)
# Every event the order subscribes to: the saga's steps and its outcomes.
Heard = Outcome | inventory_events_pb2.InventoryReserved | payment_events_pb2.PaymentSucceeded


async def deliver(saga: Saga, *messages: Outcome) -> None:
    """The messages in one transaction, through the subscriptions, as the consumer applies
    a batch of them."""
    async with saga.uow() as uow:
        for message in messages:
            delivered = event(message, message.order_id)
            await SUBSCRIPTIONS.handlers[delivered.type](uow, delivered)


def committed(order_id: uuid.UUID) -> inventory_events_pb2.InventoryCommitted:
    return inventory_events_pb2.InventoryCommitted(order_id=str(order_id))


def rejected(order_id: uuid.UUID, sku: str) -> inventory_events_pb2.InventoryRejected:
    return inventory_events_pb2.InventoryRejected(order_id=str(order_id), sku=sku, reason="short")


def payment_failed(order_id: uuid.UUID, reason: str) -> payment_events_pb2.PaymentFailed:
    return payment_events_pb2.PaymentFailed(order_id=str(order_id), reason=reason)


async def stored(saga: Saga, order_id: uuid.UUID) -> Order:
    async with saga.uow(read_only=True) as uow:
        order = await uow.orders.get(order_id)
    assert order is not None
    return order


async def outbox(saga: Saga, order_id: uuid.UUID) -> list[str]:
    rows = await saga.pool.fetch(
        "SELECT event_type FROM outbox WHERE key = $1 ORDER BY id", str(order_id)
    )
    return [row["event_type"] for row in rows]


async def cancelled_payload(saga: Saga, order_id: uuid.UUID) -> order_events_pb2.OrderCancelled:
    row = await saga.pool.fetchrow(
        "SELECT topic, payload FROM outbox WHERE key = $1 AND event_type = $2",
        str(order_id),
        CANCELLED_EVENT,
    )
    assert row is not None and row["topic"] == ORDERS
    got = unwrap(row["payload"])
    assert got.envelope.aggregate_id == str(order_id)
    assert isinstance(got.payload, order_events_pb2.OrderCancelled)
    return got.payload


@contextlib.asynccontextmanager
async def publisher(saga: Saga) -> AsyncIterator[Callable[[Heard], Awaitable[Event]]]:
    """Publishes events on their topics as the operator (keyed by order id, as their
    owners do), for the running service's consumer to read."""
    operator = KafkaIdentity.operator(saga.stack.tls_dir)
    producer = kafka_producer(saga.stack.kafka_bootstrap, operator)
    await producer.start()

    async def publish(message: Heard) -> Event:
        topic = topic_of(type(message))
        assert topic is not None
        delivered = event(message, message.order_id)
        await producer.send_and_wait(
            topic, delivered.envelope.SerializeToString(), key=message.order_id.encode()
        )
        return delivered

    try:
        yield publish
    finally:
        await producer.stop()


def hub_of(service: RunningService) -> OrderStatusHub:
    hub = service.host._bindings[0].servicer.hub
    assert isinstance(hub, OrderStatusHub)
    return hub


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


# --- the consumer's side: a batch in one transaction, the topic ----------------------------


async def test_a_batch_of_events_in_one_transaction(saga: Saga) -> None:
    """The consumer applies a partition's batch in one transaction, duplicates included."""
    a, b, c = [await new_order(saga) for _ in range(3)]
    await deliver(
        saga,
        committed(a.order_id),
        rejected(b.order_id, "SKU-B"),
        committed(a.order_id),  # a second event for a, same batch
        payment_failed(c.order_id, "expired card"),
        committed(c.order_id),
    )
    assert [
        (o.status, o.status_reason) for o in [await stored(saga, x.order_id) for x in (a, b, c)]
    ] == [
        (OrderStatus.CONFIRMED, ""),
        (OrderStatus.REJECTED, "out of stock: SKU-B"),
        (OrderStatus.CANCELLED, "payment failed: expired card"),
    ]


async def test_the_running_service_consumes_the_inventory_topic(saga: Saga) -> None:
    """The wiring: an InventoryCommitted on Kafka reaches the running instance's handler."""
    order = await new_order(saga)
    async with publisher(saga) as publish:
        delivered = await publish(committed(order.order_id))

    async def is_confirmed() -> bool:
        return (await stored(saga, order.order_id)).status is OrderStatus.CONFIRMED

    await until(is_confirmed, timeout=30)  # includes the consumer group's first rebalance
    assert (
        await saga.pool.fetchval(
            "SELECT count(*) FROM processed_events WHERE consumer = 'order' AND event_id = $1",
            delivered.event_id,
        )
        == 1
    )


# --- CancelOrder --------------------------------------------------------------------------


async def test_concurrent_cancels_announce_once(saga: Saga) -> None:
    user = uuid.uuid4()
    order = await new_order(saga, user)
    request = pb.CancelOrderRequest(order_id=str(order.order_id))
    replies = await asyncio.gather(
        *(saga.orders.CancelOrder(request, metadata=saga.token(user)) for _ in range(10))
    )
    assert len({r.order.SerializeToString() for r in replies}) == 1
    assert replies[0].order.status == pb.ORDER_STATUS_CANCELLED
    assert await outbox(saga, order.order_id) == [CANCELLED_EVENT]
    assert await cancelled_payload(saga, order.order_id) == order_events_pb2.OrderCancelled(
        order_id=str(order.order_id), user_id=str(user), reason=CANCELLED_BY_CUSTOMER
    )


async def test_cancel_races_inventory_committed_and_exactly_one_wins(saga: Saga) -> None:
    """Both lock the order row: one settles it, the other finds it final and does nothing."""
    user = uuid.uuid4()
    orders = [await new_order(saga, user) for _ in range(40)]

    async def cancel(order: Order) -> None:
        try:
            await saga.orders.CancelOrder(
                pb.CancelOrderRequest(order_id=str(order.order_id)), metadata=saga.token(user)
            )
        except grpc.aio.AioRpcError as error:  # the commit won
            assert error.code() == C.FAILED_PRECONDITION, error.details()

    await asyncio.gather(
        *(
            call
            for order in orders
            for call in (
                cancel(order),
                deliver(saga, committed(order.order_id)),
            )
        )
    )
    outcomes = []
    for order in orders:
        got = await stored(saga, order.order_id)
        assert got.status in (OrderStatus.CONFIRMED, OrderStatus.CANCELLED)
        announced = await outbox(saga, order.order_id)
        if got.status is OrderStatus.CANCELLED:
            assert got.status_reason == CANCELLED_BY_CUSTOMER
            assert announced == [CANCELLED_EVENT]
        else:
            assert announced == []
        outcomes.append(got.status)
    assert len(outcomes) == 40


async def test_whoever_locks_the_order_first_wins(saga: Saga) -> None:
    """The same race, its order forced: each pair queues on the order's row lock, cancel
    first for even orders, the commit first for odd ones; the first in the queue wins."""
    user = uuid.uuid4()
    orders = [await new_order(saga, user) for _ in range(6)]
    ids = [o.order_id for o in orders]

    async def queued(wanted: int) -> None:
        """Until ``wanted`` transactions wait on a lock (in the queue, in arrival order)."""

        async def enough() -> bool:
            return (
                int(
                    await saga.pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
                >= wanted
            )

        await until(enough)

    async def cancel(order: Order) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await saga.orders.CancelOrder(
                pb.CancelOrderRequest(order_id=str(order.order_id)), metadata=saga.token(user)
            )

    contenders: list[asyncio.Task[None]] = []
    async with saga.pool.acquire() as blocker, blocker.transaction():
        await blocker.execute(
            "SELECT 1 FROM orders WHERE order_id = ANY($1::uuid[]) FOR UPDATE", ids
        )
        for i, order in enumerate(orders):
            pair = [cancel(order), deliver(saga, committed(order.order_id))]
            for contender in pair if i % 2 == 0 else pair[::-1]:
                contenders.append(asyncio.create_task(contender))
                await queued(len(contenders))
    await asyncio.gather(*contenders)

    for i, order in enumerate(orders):
        got = await stored(saga, order.order_id)
        if i % 2 == 0:
            assert got.status is OrderStatus.CANCELLED
            assert await outbox(saga, order.order_id) == [CANCELLED_EVENT]
        else:
            assert got.status is OrderStatus.CONFIRMED
            assert await outbox(saga, order.order_id) == []


# --- the saga timeout ---------------------------------------------------------------------


async def test_overdue_orders_are_timed_out_once_by_several_instances(saga: Saga) -> None:
    # Past the wall-clock ceiling (2 minutes) at once; the saga clock has not moved for them.
    overdue = [await new_order(saga, age=timedelta(minutes=5)) for _ in range(45)]
    settled = await new_order(saga, age=timedelta(minutes=5))
    await deliver(saga, committed(settled.order_id))
    fresh = await new_order(saga)  # due once the saga clock moved 6 s past its placing
    timeout = 6.0

    fast = {
        "saga_timeout_seconds": timeout,
        "saga_timeout_max_seconds": 120,
        "saga_timeout_batch_size": 4,
    }
    async with (
        run_service(ORDER, saga.stack, saga.keys, **fast),
        run_service(ORDER, saga.stack, saga.keys, **fast),
    ):

        async def all_timed_out() -> bool:
            return bool(
                await saga.pool.fetchval(
                    "SELECT bool_and(status = 'cancelled') FROM orders"
                    " WHERE order_id = ANY($1::uuid[])",
                    [o.order_id for o in overdue],
                )
            )

        await until(all_timed_out, timeout=15)
        # Not yet due: untouched for now.
        assert (await stored(saga, fresh.order_id)).status is OrderStatus.PENDING

        async def fresh_timed_out() -> bool:
            return (await stored(saga, fresh.order_id)).status is OrderStatus.CANCELLED

        # The instances' consumers first rebalance (the clock waits for that), then the
        # clock runs on their healthy links, each advance made by one of the three.
        await until(fresh_timed_out, timeout=timeout + 20)
        clock_time = await saga.pool.fetchval(
            "SELECT (SELECT seconds FROM saga_clock) - placed_clock FROM orders"
            " WHERE order_id = $1",
            fresh.order_id,
        )
        assert clock_time > timeout
        # An order takes the clock's last value, up to a round (1 s) old.
        assert datetime.now(UTC) - fresh.created_at >= timedelta(seconds=timeout - 1)

    for order in [*overdue, fresh]:
        got = await stored(saga, order.order_id)
        assert got.status_reason == SAGA_TIMED_OUT
        assert await outbox(saga, order.order_id) == [CANCELLED_EVENT]  # exactly once
        assert (await cancelled_payload(saga, order.order_id)).reason == SAGA_TIMED_OUT
    assert (await stored(saga, settled.order_id)).status is OrderStatus.CONFIRMED
    assert await outbox(saga, settled.order_id) == []


# --- WatchOrder ---------------------------------------------------------------------------


def watch(
    saga: Saga,
    order_id: uuid.UUID,
    metadata: Any,
    *,
    stub: Any = None,
    timeout: float | None = None,
) -> Any:
    return (stub or saga.orders).WatchOrder(
        pb.WatchOrderRequest(order_id=str(order_id)), metadata=metadata, timeout=timeout
    )


async def test_watch_streams_pending_then_confirmed_then_ends(saga: Saga) -> None:
    user = uuid.uuid4()
    order = await new_order(saga, user)
    call = watch(saga, order.order_id, saga.token(user))
    first = await call.read()
    assert first.order.status == pb.ORDER_STATUS_PENDING
    assert first.order.order_id == str(order.order_id)

    started = time.monotonic()
    await deliver(saga, committed(order.order_id))
    second = await asyncio.wait_for(call.read(), 5)
    # Pushed by NOTIFY, well before the 2 s fallback re-read would have noticed.
    assert time.monotonic() - started < 1.5
    assert second.order.status == pb.ORDER_STATUS_CONFIRMED
    assert await call.read() == EOF
    assert await call.code() == C.OK
    await until(lambda: _no_watchers(saga.order))


async def test_watch_streams_each_saga_step_the_service_hears_on_kafka(saga: Saga) -> None:
    """PLACED, RESERVED, CHARGED, then CONFIRMED (step COMMITTED): each message pushed as
    the running instance consumes the step's event from the inventory or payments topic."""
    user = uuid.uuid4()
    order = await new_order(saga, user)
    order_id = str(order.order_id)
    total = money_pb2.Money(amount_minor=order.total.amount_minor, currency="USD")
    steps: list[tuple[Heard, tuple[int, int]]] = [
        (
            inventory_events_pb2.InventoryReserved(
                order_id=order_id, user_id=str(user), total=total
            ),
            (pb.ORDER_STATUS_PENDING, pb.ORDER_STEP_RESERVED),
        ),
        (
            payment_events_pb2.PaymentSucceeded(order_id=order_id, charge_id="ch-1", amount=total),
            (pb.ORDER_STATUS_PENDING, pb.ORDER_STEP_CHARGED),
        ),
        (committed(order.order_id), (pb.ORDER_STATUS_CONFIRMED, pb.ORDER_STEP_COMMITTED)),
    ]
    call = watch(saga, order.order_id, saga.token(user))
    seen = [(await call.read()).order]
    assert (seen[0].status, seen[0].step) == (pb.ORDER_STATUS_PENDING, pb.ORDER_STEP_PLACED)
    async with publisher(saga) as publish:
        # One at a time: the two topics keep no order between them (the unit tests take
        # every arrival order), and each step is to be seen on the stream.
        for message, _ in steps:
            await publish(message)
            # The first may wait for the consumer group's first rebalance.
            seen.append((await asyncio.wait_for(call.read(), 30)).order)
    assert [(o.status, o.step) for o in seen[1:]] == [want for _, want in steps]
    assert all(a.updated_at.ToDatetime() < b.updated_at.ToDatetime() for a, b in pairwise(seen))
    assert await call.read() == EOF
    assert await call.code() == C.OK
    got = await saga.orders.GetOrder(
        pb.GetOrderRequest(order_id=order_id), metadata=saga.token(user)
    )
    assert got.order == seen[-1]
    await until(lambda: _no_watchers(saga.order))


async def _no_watchers(service: RunningService) -> bool:
    return hub_of(service).watcher_count == 0


async def test_watch_hears_a_change_made_through_another_instance(saga: Saga) -> None:
    user = uuid.uuid4()
    order = await new_order(saga, user)
    async with run_service(ORDER, saga.stack, saga.keys, **NO_TIMEOUT) as other:
        call = watch(
            saga,
            order.order_id,
            saga.token(user),
            stub=order_pb2_grpc.OrderServiceStub(other.channel),
        )
        assert (await call.read()).order.status == pb.ORDER_STATUS_PENDING
        await saga.orders.CancelOrder(
            pb.CancelOrderRequest(order_id=str(order.order_id)), metadata=saga.token(user)
        )
        last = await asyncio.wait_for(call.read(), 1.5)
        assert last.order.status == pb.ORDER_STATUS_CANCELLED
        assert last.order.status_reason == CANCELLED_BY_CUSTOMER
        assert await call.read() == EOF
        await until(lambda: _no_watchers(other))


async def test_a_watch_survives_losing_the_listener_connection(saga: Saga) -> None:
    """A notification lost with the connection is made up for by the re-read, and the hub
    listens again."""
    user = uuid.uuid4()
    order = await new_order(saga, user)
    hub = hub_of(saga.order)
    call = watch(saga, order.order_id, saga.token(user))
    assert (await call.read()).order.status == pb.ORDER_STATUS_PENDING
    assert hub.listener.connection is not None
    listener_pid = hub.listener.connection.get_server_pid()
    assert await saga.pool.fetchval("SELECT pg_terminate_backend($1)", listener_pid)
    await deliver(saga, committed(order.order_id))
    got = await asyncio.wait_for(call.read(), 5)
    assert got.order.status == pb.ORDER_STATUS_CONFIRMED
    assert await call.read() == EOF

    async def listening_again() -> bool:
        conn = hub.listener.connection
        return conn is not None and not conn.is_closed() and conn.get_server_pid() != listener_pid

    await until(listening_again, timeout=5)
    # ... and pushes again: the next change arrives well before the fallback re-read.
    again = await new_order(saga, user)
    call = watch(saga, again.order_id, saga.token(user))
    assert (await call.read()).order.status == pb.ORDER_STATUS_PENDING
    started = time.monotonic()
    await deliver(saga, committed(again.order_id))
    assert (await asyncio.wait_for(call.read(), 5)).order.status == pb.ORDER_STATUS_CONFIRMED
    assert time.monotonic() - started < 1.5


async def test_a_cancelled_watch_is_cleaned_up_on_the_server(saga: Saga) -> None:
    user = uuid.uuid4()
    order = await new_order(saga, user)
    hub = hub_of(saga.order)
    call = watch(saga, order.order_id, saga.token(user))
    assert (await call.read()).order.status == pb.ORDER_STATUS_PENDING
    assert hub.watcher_count == 1
    assert call.cancel()
    await until(lambda: _no_watchers(saga.order), timeout=5)
    assert await call.code() == C.CANCELLED


async def test_a_watch_past_its_deadline_ends_and_is_cleaned_up(saga: Saga) -> None:
    user = uuid.uuid4()
    order = await new_order(saga, user)
    call = watch(saga, order.order_id, saga.token(user), timeout=0.8)
    assert (await call.read()).order.status == pb.ORDER_STATUS_PENDING
    assert hub_of(saga.order).watcher_count == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == C.DEADLINE_EXCEEDED
    await until(lambda: _no_watchers(saga.order), timeout=5)


async def test_a_watch_ends_unavailable_when_the_instance_shuts_down(saga: Saga) -> None:
    user = uuid.uuid4()
    order = await new_order(saga, user)
    # A long grace: only the shutdown hook can end the stream quickly.
    instance = run_service(ORDER, saga.stack, saga.keys, **NO_TIMEOUT, shutdown_grace_seconds=20)
    doomed = await instance.__aenter__()
    channel = doomed.new_channel()  # outlives the instance's own
    try:
        call = watch(
            saga, order.order_id, saga.token(user), stub=order_pb2_grpc.OrderServiceStub(channel)
        )
        assert (await call.read()).order.status == pb.ORDER_STATUS_PENDING
        hub = hub_of(doomed)
        assert hub.watcher_count == 1
        started = time.monotonic()
        stopping = asyncio.create_task(instance.__aexit__(None, None, None))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(call.read(), 10)
        assert caught.value.code() == C.UNAVAILABLE
        assert "reconnect" in (caught.value.details() or "")
        await asyncio.wait_for(stopping, 15)
        assert time.monotonic() - started < 10  # far from the 20 s grace
        assert hub.watcher_count == 0
    finally:
        await channel.close(grace=None)

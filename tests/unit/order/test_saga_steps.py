"""The order's saga step (OrderStep): how far the saga got, apart from the status.

In the domain (no I/O), then through the subscriptions on the in-memory unit of work
(tests/unit/order/fakes.py): in every arrival order of the five events the order hears,
redeliveries included, the step never moves back, and the status is settled exactly as
before there was a step (the first outcome wins, with the same reason)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from google.protobuf.message import Message

from ops import shopctl
from services.order import use_cases
from services.order.domain import (
    Order,
    OrderStatus,
    OrderStep,
    cancel_by_customer,
    inventory_committed,
    inventory_rejected,
    order_request,
    payment_failed,
    place_order,
    progress,
    settle,
    time_out,
)
from services.order.grpc_api import order_to_proto
from services.order.publishing import order_created
from services.order.subscriptions import SUBSCRIPTIONS
from shared.errors import InvalidArgument
from shared.messaging.envelope import Event, wrap
from shop.common.v1 import money_pb2
from shop.events.v1 import inventory_events_pb2, payment_events_pb2
from shop.order.v1 import order_pb2
from tests.unit.order.fakes import (
    CUSTOMER,
    FakeOrderUnitOfWork,
    RowLockWouldWait,
    World,
    catalog_entry,
)

PLACED, RESERVED, CHARGED, COMMITTED = OrderStep
STEPS = list(OrderStep)
PENDING, CONFIRMED, REJECTED, CANCELLED = OrderStatus
FINAL = [CONFIRMED, REJECTED, CANCELLED]


def pending_order() -> Order:
    entry = catalog_entry(250)
    request = order_request("key-1", [(str(entry.product_id), 1)])
    return place_order(user_id=uuid.uuid4(), request=request, catalog={entry.product_id: entry})


def at(step: OrderStep, status: OrderStatus = PENDING) -> Order:
    """A pending order at ``step``, then moved to ``status``."""
    order = replace(pending_order(), step=step)
    if status is PENDING:
        return order
    return order.transition(status, "" if status is CONFIRMED else "earlier")


def later(a: OrderStep, b: OrderStep) -> OrderStep:
    return max(a, b, key=STEPS.index)


# --- the domain ------------------------------------------------------------------------


def test_a_new_order_is_placed_and_the_steps_are_ordered() -> None:
    assert pending_order().step is PLACED
    assert STEPS == [PLACED, RESERVED, CHARGED, COMMITTED]
    for a, b in itertools.product(STEPS, STEPS):
        assert a.at_least(b) == (STEPS.index(a) >= STEPS.index(b))


@pytest.mark.parametrize(("start", "to"), list(itertools.product(STEPS, [RESERVED, CHARGED])))
def test_a_pending_orders_step_only_moves_forward(start: OrderStep, to: OrderStep) -> None:
    order = at(start)
    moved = progress(order, to)
    if not STEPS.index(to) > STEPS.index(start):
        assert moved is None  # a redelivery, or overtaken by a later step: nothing to do
        return
    assert moved is not None and moved.step is to
    assert moved.updated_at >= order.updated_at
    # Nothing else moves: the status, its reason, the items, the total.
    assert replace(moved, step=start, updated_at=order.updated_at) == order


@pytest.mark.parametrize("to", [RESERVED, CHARGED])
@pytest.mark.parametrize("status", FINAL)
def test_a_final_orders_step_never_moves(status: OrderStatus, to: OrderStep) -> None:
    assert progress(at(PLACED, status), to) is None


@pytest.mark.parametrize("step", [PLACED, RESERVED, CHARGED])
def test_what_each_final_status_leaves_as_the_step(step: OrderStep) -> None:
    # Confirmed means sold, whichever steps were heard before the commit.
    assert at(step).confirm().step is COMMITTED
    committed = settle(at(step), inventory_committed())
    assert committed is not None and committed.step is COMMITTED
    # Inventory rejects only what it never reserved: the step stays (PLACED, in practice).
    rejected = settle(at(step), inventory_rejected("SKU-7"))
    assert rejected is not None and rejected.step is step
    # Payment charges only a reserved order: a failure shows at least that, never less.
    failed = settle(at(step), payment_failed("declined"))
    assert failed is not None and failed.step is later(step, RESERVED)
    # A cancel keeps the furthest step reached.
    assert cancel_by_customer(at(step)).step is step
    assert time_out(at(step)).step is step


def test_every_step_reaches_the_proto_and_shopctl_prints_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = []
    for step in STEPS:
        reply = order_to_proto(at(step))
        names.append(order_pb2.OrderStep.Name(reply.step))
        shopctl.show(reply)  # `shopctl orders` and `place-order` print each order so
        assert f'"step": "{names[-1]}"' in capsys.readouterr().out
    assert names == [f"ORDER_STEP_{step.name}" for step in STEPS]
    # Every value but UNSPECIFIED, which no order the service returns carries.
    assert set(names) == set(order_pb2.OrderStep.keys()) - {"ORDER_STEP_UNSPECIFIED"}


# --- through the subscriptions, on the fake unit of work --------------------------------


def reserved(order_id: str) -> Message:
    total = money_pb2.Money(amount_minor=250, currency="USD")
    return inventory_events_pb2.InventoryReserved(order_id=order_id, user_id="u", total=total)


def succeeded(order_id: str) -> Message:
    return payment_events_pb2.PaymentSucceeded(order_id=order_id, charge_id="charge-1")


EVENTS: dict[str, Callable[[str], Message]] = {
    "InventoryReserved": reserved,
    "PaymentSucceeded": succeeded,
    "InventoryCommitted": lambda i: inventory_events_pb2.InventoryCommitted(order_id=i),
    "InventoryRejected": lambda i: inventory_events_pb2.InventoryRejected(order_id=i, sku="SKU-7"),
    "PaymentFailed": lambda i: payment_events_pb2.PaymentFailed(order_id=i, reason="no funds"),
}
STEP_EVENTS = {"InventoryReserved": reserved, "PaymentSucceeded": succeeded}
# What the first outcome makes of a pending order, as before the step existed.
OUTCOME = {
    "InventoryCommitted": (CONFIRMED, ""),
    "InventoryRejected": (REJECTED, "out of stock: SKU-7"),
    "PaymentFailed": (CANCELLED, "payment failed: no funds"),
}


async def deliver(uow: FakeOrderUnitOfWork, *messages: Message) -> None:
    """The messages in one transaction, through the subscriptions, as the consumer does."""
    async with uow() as open_uow:
        for message in messages:
            event = Event(envelope=wrap(message, "key"), payload=message)
            await SUBSCRIPTIONS.handlers[event.type](open_uow, event)


async def one_by_one(world: World, order: Order, names: Sequence[str]) -> list[Order]:
    """The events, each in its own transaction; the stored order after each."""
    after = []
    for name in names:
        await deliver(world.uow, EVENTS[name](str(order.order_id)))
        after.append(world.stored(order.order_id))
    return after


@pytest.fixture
def world() -> World:
    return World.new()


R, S, C = "InventoryReserved", "PaymentSucceeded", "InventoryCommitted"


@pytest.mark.parametrize(
    ("names", "steps", "status"),
    [
        # The happy path in each of its six arrival orders: two topics, no order between them.
        ((R, S, C), [RESERVED, CHARGED, COMMITTED], CONFIRMED),
        ((S, R, C), [CHARGED, CHARGED, COMMITTED], CONFIRMED),
        ((R, C, S), [RESERVED, COMMITTED, COMMITTED], CONFIRMED),
        ((S, C, R), [CHARGED, COMMITTED, COMMITTED], CONFIRMED),
        ((C, R, S), [COMMITTED, COMMITTED, COMMITTED], CONFIRMED),
        ((C, S, R), [COMMITTED, COMMITTED, COMMITTED], CONFIRMED),
        # Redelivered, every one of them.
        ((R, R, S, R, S, C, C, S), [RESERVED] * 2 + [CHARGED] * 3 + [COMMITTED] * 3, CONFIRMED),
        # Payment failed (inventory then releases: nothing the order hears).
        ((R, "PaymentFailed"), [RESERVED, RESERVED], CANCELLED),
        (("PaymentFailed", R, R), [RESERVED] * 3, CANCELLED),
        # Out of stock: never reserved.
        (("InventoryRejected", "InventoryRejected"), [PLACED, PLACED], REJECTED),
    ],
)
async def test_the_steps_each_arrival_order_shows(
    world: World, names: tuple[str, ...], steps: list[OrderStep], status: OrderStatus
) -> None:
    order = await world.place()
    after = await one_by_one(world, order, names)
    assert [o.step for o in after] == steps
    assert after[-1].status is status
    assert world.uow.messages == [order_created(order)]  # a step announces nothing


def expected(names: Sequence[str]) -> tuple[OrderStatus, str, OrderStep]:
    """The model: the first outcome settles the status; steps only add while pending."""
    status, reason, step = PENDING, "", PLACED
    for name in names:
        if status is not PENDING:
            break
        if name in OUTCOME:
            status, reason = OUTCOME[name]
        step = later(step, {R: RESERVED, S: CHARGED, C: COMMITTED}.get(name, PLACED))
        if name == "PaymentFailed":
            step = later(step, RESERVED)
    return status, reason, step


async def test_every_arrival_order_with_redeliveries_never_moves_the_step_back(
    world: World,
) -> None:
    """Every sequence of up to four of the five events (780 of them)."""
    sequences = [s for n in range(1, 5) for s in itertools.product(EVENTS, repeat=n)]
    for names in sequences:
        order = await world.place()
        before = order
        for name, now in zip(names, await one_by_one(world, order, names), strict=True):
            assert now.step.at_least(before.step), (names, name)
            if before.is_final:
                assert now == before, (names, name)  # not even updated_at moved
            before = now
        assert (before.status, before.status_reason, before.step) == expected(names), names
    assert len(world.uow.messages) == len(sequences)  # OrderCreated each, nothing else


async def test_one_batch_takes_the_steps_and_the_outcome(world: World) -> None:
    order = await world.place()
    commits = world.uow.commits
    await deliver(world.uow, *(EVENTS[name](str(order.order_id)) for name in (S, R, C, R)))
    got = world.stored(order.order_id)
    assert (got.status, got.step) == (CONFIRMED, COMMITTED)
    assert world.uow.commits == commits + 1


@pytest.mark.parametrize("name", list(STEP_EVENTS))
async def test_a_step_after_the_customer_cancelled_changes_nothing(world: World, name: str) -> None:
    order = await world.place()
    cancelled = await use_cases.cancel(world.uow, str(order.order_id), CUSTOMER.user_id)
    await deliver(world.uow, STEP_EVENTS[name](str(order.order_id)))
    assert world.stored(order.order_id) == cancelled


@pytest.mark.parametrize("name", list(STEP_EVENTS))
async def test_a_step_for_an_unknown_order_is_ignored(world: World, name: str) -> None:
    await deliver(world.uow, STEP_EVENTS[name](str(uuid.uuid4())))  # does not raise
    assert world.uow.orders.rows == {} and world.uow.rollbacks == 0


@pytest.mark.parametrize("order_id", ["not-an-order-id", ""], ids=["malformed", "missing"])
@pytest.mark.parametrize("name", list(STEP_EVENTS))
async def test_a_step_with_an_unreadable_order_id_raises_for_the_dead_letter_topic(
    world: World, name: str, order_id: str
) -> None:
    order = await world.place()
    with pytest.raises(InvalidArgument) as caught:
        await deliver(world.uow, reserved(str(order.order_id)), STEP_EVENTS[name](order_id))
    assert caught.value.field == "order_id"
    # The whole batch rolled back: the consumer retries it, then dead-letters the event.
    assert world.stored(order.order_id) == order and world.uow.rollbacks == 1


@pytest.mark.parametrize("name", list(STEP_EVENTS))
async def test_a_step_locks_the_order(world: World, name: str) -> None:
    """An outcome from the other topic may be settling it: the handler waits for it."""
    order = await world.place()
    world.uow.orders.held_elsewhere.add(order.order_id)
    with pytest.raises(RowLockWouldWait):
        await deliver(world.uow, STEP_EVENTS[name](str(order.order_id)))


async def test_a_watch_streams_each_step_then_the_outcome_and_ends(world: World) -> None:
    order = await world.place()
    stream = use_cases.watch(world.uow, world.hub, str(order.order_id), CUSTOMER, recheck=60)
    assert (await anext(stream)).step is PLACED

    async def next_of() -> Order:
        return await anext(stream)

    async def after(name: str) -> asyncio.Task[Order]:
        following = asyncio.create_task(next_of())
        await asyncio.sleep(0)  # watching
        await deliver(world.uow, EVENTS[name](str(order.order_id)))
        return following

    assert (await asyncio.wait_for(await after(R), 5)).step is RESERVED
    # A redelivered step changes nothing and wakes no one: nothing is streamed for it.
    following = await after(R)
    await asyncio.sleep(0.05)
    assert not following.done()
    await deliver(world.uow, succeeded(str(order.order_id)))
    charged = await asyncio.wait_for(following, 5)
    assert (charged.status, charged.step) == (PENDING, CHARGED)
    confirmed = await asyncio.wait_for(await after(C), 5)
    assert (confirmed.status, confirmed.step) == (CONFIRMED, COMMITTED)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert world.hub.watcher_count == 0

"""How delivery goes wrong, on the fake unit of work: saga events in any order of
arrival, the same event twice, and events that cannot be read.

Kafka keeps one order's events in order within a topic, but inventory reads two
topics (orders, payments) with no order between them, and redelivers after a crash.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import pytest
from google.protobuf.message import Message

from services.inventory.domain import ReservationState
from shared.errors import InvalidArgument
from shop.events.v1 import order_events_pb2
from tests.support.inventory_events import (
    new_order,
    order_cancelled,
    order_created,
    payment_failed,
    payment_succeeded,
)
from tests.unit.inventory.fakes import FakeInventoryUnitOfWork
from tests.unit.inventory.saga import audit, deliver, published_types, set_stock, state, stock

S = ReservationState


# --- events in any order --------------------------------------------------------------------------

Events = Callable[[str], Message]


def created(order_id: str) -> Message:
    return order_created(order_id, ("AA", 2))


def paid(order_id: str) -> Message:
    return payment_succeeded(order_id)


def failed(order_id: str) -> Message:
    return payment_failed(order_id)


def cancelled(order_id: str) -> Message:
    return order_cancelled(order_id)


def arrival_id(arrival: tuple[Events, ...]) -> str:
    return "-".join(event.__name__ for event in arrival)


# The three-event sagas ending in a cancel, in every order of arrival: the end state and
# what was announced.
EXPECTED_ENDINGS: dict[tuple[Events, ...], tuple[ReservationState, list[str]]] = {
    (created, paid, cancelled): (S.RELEASED, ["Reserved", "Committed", "Released"]),
    (created, cancelled, paid): (S.RELEASED, ["Reserved", "Released"]),
    (paid, created, cancelled): (S.RELEASED, ["Reserved", "Released"]),  # paid too early: no-op
    (paid, cancelled, created): (S.CANCELLED, []),
    (cancelled, created, paid): (S.CANCELLED, []),
    (cancelled, paid, created): (S.CANCELLED, []),
}


@pytest.mark.parametrize("arrival", list(EXPECTED_ENDINGS), ids=arrival_id)
async def test_a_cancelled_saga_ends_released_in_any_order_of_arrival(
    uow: FakeInventoryUnitOfWork, arrival: tuple[Events, ...]
) -> None:
    order = new_order()
    await set_stock(uow, "AA", 5)
    await deliver(uow, *(event(order) for event in arrival))
    end, announced = EXPECTED_ENDINGS[arrival]
    assert state(uow, order) is end
    assert published_types(uow, order) == [f"Inventory{name}" for name in announced]
    assert stock(uow, "AA") == (5, 0, 0, 5)
    audit(uow)


@pytest.mark.parametrize(
    "arrival", list(itertools.permutations([created, paid, failed, cancelled])), ids=arrival_id
)
async def test_every_order_of_every_saga_event_keeps_the_ledger_and_ends_with_nothing_held(
    uow: FakeInventoryUnitOfWork, arrival: tuple[Events, ...]
) -> None:
    order = new_order()
    await set_stock(uow, "AA", 5)
    for event in arrival:
        await deliver(uow, event(order))
        audit(uow)
    assert state(uow, order) in (S.RELEASED, S.CANCELLED, S.REJECTED)
    assert stock(uow, "AA") == (5, 0, 0, 5)
    types = published_types(uow, order)
    # At most one announcement of each kind, and nothing after a release.
    assert len(types) == len(set(types))
    assert "InventoryReleased" not in types[:-1]


# --- redelivery -----------------------------------------------------------------------------------

SAGAS: dict[str, list[Events]] = {
    "reserved": [created],
    "committed": [created, paid],
    "failed": [created, failed],
    "cancelled-after-commit": [created, paid, cancelled],
    "tombstone": [cancelled],
    "tombstone-then-created": [cancelled, created],
}


@pytest.mark.parametrize(
    ("saga", "again"),
    [
        pytest.param(saga, again, id=f"{saga}-{again.__name__}")
        for saga, events in SAGAS.items()
        for again in events
    ],
)
async def test_redelivery_of_a_handled_event_changes_and_publishes_nothing(
    uow: FakeInventoryUnitOfWork, saga: str, again: Events
) -> None:
    order = new_order()
    await set_stock(uow, "AA", 5)
    await deliver(uow, *(event(order) for event in SAGAS[saga]))
    tables, announced = copy.deepcopy(uow.tables), list(uow.published)

    await deliver(uow, again(order))  # a republished copy: same content, new event id
    assert uow.tables == tables
    assert uow.published == announced


async def test_a_rejected_order_redelivered_is_rejected_once(uow: FakeInventoryUnitOfWork) -> None:
    order = new_order()
    await set_stock(uow, "AA", 1)
    for _ in range(3):
        await deliver(uow, order_created(order, ("AA", 2)))
    assert published_types(uow, order) == ["InventoryRejected"]
    assert stock(uow, "AA") == (1, 0, 0, 1)


# --- malformed events: raise (the consumer retries, then dead-letters), write nothing -------------


def _malformed_created() -> list[tuple[str, Message]]:
    cases: list[tuple[str, Message]] = []
    for name, change in [
        ("no-lines", lambda e: e.ClearField("lines")),
        ("zero-quantity", lambda e: setattr(e.lines[0], "quantity", 0)),
        ("negative-quantity", lambda e: setattr(e.lines[0], "quantity", -3)),
        ("bad-sku", lambda e: setattr(e.lines[0], "sku", "bad sku")),
        ("no-user", lambda e: setattr(e, "user_id", "")),
        ("no-total", lambda e: e.ClearField("total")),
        ("bad-order-id", lambda e: setattr(e, "order_id", "not-a-uuid")),
    ]:
        event = order_created(new_order(), ("AA", 1))
        change(event)
        cases.append((f"created-{name}", event))
    return cases


MALFORMED = [
    *_malformed_created(),
    ("paid-bad-order-id", payment_succeeded("not-a-uuid")),
    ("failed-no-order-id", payment_failed("")),
    ("cancelled-bad-order-id", order_cancelled("42")),
    ("cancelled-no-user", order_events_pb2.OrderCancelled(order_id=new_order(), reason="x")),
]


@pytest.mark.parametrize("message", [pytest.param(m, id=n) for n, m in MALFORMED])
async def test_a_malformed_event_raises_and_writes_nothing(
    uow: FakeInventoryUnitOfWork, message: Message
) -> None:
    await set_stock(uow, "AA", 10)
    held = new_order()
    await deliver(uow, order_created(held, ("AA", 1)))
    tables, announced = copy.deepcopy(uow.tables), list(uow.published)

    with pytest.raises(InvalidArgument):
        await deliver(uow, message)
    assert uow.tables == tables
    assert uow.published == announced

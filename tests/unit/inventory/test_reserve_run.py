"""A run of OrderCreated in one transaction (the hot-SKU path), on the fake unit of work.

The run must end exactly as its events one at a time would: the same holds and
rejections, first come first served, the same announcements; only the number of
statements differs (one claim per SKU for its single-line orders).
"""

from __future__ import annotations

import copy
import random
import uuid

import pytest

from services.inventory.domain import ReservationState
from shared.errors import InvalidArgument
from shop.events.v1 import inventory_events_pb2
from tests.support.inventory_events import new_order, order_cancelled, order_created
from tests.unit.inventory.fakes import FakeInventoryUnitOfWork
from tests.unit.inventory.saga import (
    audit,
    deliver,
    deliver_run,
    published,
    published_types,
    set_stock,
    state,
    stock,
)

S = ReservationState


async def test_a_run_sells_exactly_the_stock_first_come_first_served(
    uow: FakeInventoryUnitOfWork,
) -> None:
    await set_stock(uow, "HOT-1", 20)
    orders = [new_order() for _ in range(200)]
    await deliver_run(uow, *(order_created(o, ("HOT-1", 1)) for o in orders))

    assert [state(uow, o) for o in orders] == [S.RESERVED] * 20 + [S.REJECTED] * 180
    assert stock(uow, "HOT-1") == (0, 20, 0, 20)
    assert uow.claims == {"claim_and_hold_same_sku": 1}
    assert published_types(uow, orders[0]) == ["InventoryReserved"]
    assert published(uow, orders[-1]) == [
        inventory_events_pb2.InventoryRejected(
            order_id=orders[-1], sku="HOT-1", reason="out of stock"
        )
    ]
    assert uow.tables.reservations[uuid.UUID(orders[-1])].reason == "out of stock: HOT-1"
    audit(uow)


async def test_a_run_mixes_skus_lines_tombstones_and_unknown_skus(
    uow: FakeInventoryUnitOfWork,
) -> None:
    await set_stock(uow, "AA", 2)
    await set_stock(uow, "BB", 1)
    tombstoned, multi, on_a, on_b, on_unknown, also_a = (new_order() for _ in range(6))
    await deliver(uow, order_cancelled(tombstoned))
    await deliver_run(
        uow,
        order_created(tombstoned, ("AA", 1)),
        order_created(multi, ("AA", 1), ("BB", 1)),
        order_created(on_a, ("AA", 1)),
        order_created(on_b, ("BB", 1)),
        order_created(on_unknown, ("NONE", 1)),
        order_created(also_a, ("AA", 1)),
    )
    assert state(uow, tombstoned) is S.CANCELLED  # a cancel that came first wins
    assert published(uow, tombstoned) == []
    assert state(uow, multi) is S.RESERVED  # the per-event path, every line held
    assert state(uow, on_a) is S.RESERVED
    assert state(uow, on_b) is S.REJECTED  # the multi-line order took BB's only unit
    assert state(uow, on_unknown) is S.REJECTED
    assert state(uow, also_a) is S.REJECTED
    assert stock(uow, "AA") == (0, 2, 0, 2)
    # The AA order before the multi-line one, then that one alone, then one claim for
    # each SKU of the single-line orders after it.
    assert uow.claims == {"claim_and_hold": 1, "claim_and_hold_same_sku": 4}
    audit(uow)


def _runs() -> list[tuple[str, dict[str, int], list[tuple[tuple[str, int], ...]]]]:
    """(name, stock per SKU, each order's lines)."""
    rng = random.Random(7)
    skus = ["AA", "BB", "CC", "NONE"]
    single_lines: list[tuple[tuple[str, int], ...]] = [
        ((rng.choice(skus), rng.randint(1, 4)),) for _ in range(60)
    ]
    # A multi-line order now and then, among single-line orders of its SKUs.
    mixed = [
        tuple((rng.choice(skus), rng.randint(1, 4)) for _ in range(rng.choice([1, 1, 1, 2, 3])))
        for _ in range(60)
    ]
    return [
        ("first-fit", {"AA": 5}, [(("AA", 3),), (("AA", 3),), (("AA", 2),), (("AA", 1),)]),
        ("nothing-fits", {"AA": 0}, [(("AA", 1),), (("AA", 2),)]),
        ("a-smaller-ask-fits-later", {"AA": 3}, [(("AA", 4),), (("AA", 1),), (("AA", 2),)]),
        ("several-skus", {"AA": 6, "BB": 2, "CC": 9}, single_lines),
        ("multi-line-after-single-line", {"AA": 2}, [(("AA", 2),), (("AA", 1), ("BB", 1))]),
        ("multi-line-orders-among-them", {"AA": 6, "BB": 4, "CC": 9}, mixed),
    ]


@pytest.mark.parametrize(
    ("available", "orders"), [pytest.param(a, o, id=name) for name, a, o in _runs()]
)
async def test_a_run_ends_as_its_events_one_at_a_time(
    available: dict[str, int], orders: list[tuple[tuple[str, int], ...]]
) -> None:
    events = [order_created(new_order(), *lines) for lines in orders]
    merged, single = FakeInventoryUnitOfWork(), FakeInventoryUnitOfWork()
    for fake in (merged, single):
        for sku, units in available.items():
            await set_stock(fake, sku, units)
    await deliver_run(merged, *events)
    await deliver(single, *events)

    # The same units everywhere (the rows' update times may differ).
    assert _units(merged) == _units(single)
    for event in events:
        assert state(merged, event.order_id) is state(single, event.order_id), event
        assert published(merged, event.order_id) == published(single, event.order_id)
    audit(merged)


def _units(uow: FakeInventoryUnitOfWork) -> dict[str, tuple[int, int, int, int]]:
    return {sku: stock(uow, sku) for sku in uow.tables.stock}


async def test_a_redelivered_run_changes_and_publishes_nothing(
    uow: FakeInventoryUnitOfWork,
) -> None:
    await set_stock(uow, "AA", 3)
    events = [order_created(new_order(), ("AA", 1)) for _ in range(5)]
    await deliver_run(uow, *events)
    tables, announced = copy.deepcopy(uow.tables), list(uow.published)

    await deliver_run(uow, *events)
    assert uow.tables == tables
    assert uow.published == announced
    assert stock(uow, "AA") == (0, 3, 0, 3)


async def test_a_malformed_event_fails_the_whole_run(uow: FakeInventoryUnitOfWork) -> None:
    """The consumer then retries the batch's events one by one, and dead-letters the bad one."""
    await set_stock(uow, "AA", 3)
    bad = order_created(new_order(), ("AA", 1))
    bad.user_id = "nobody"
    tables = copy.deepcopy(uow.tables)
    with pytest.raises(InvalidArgument):
        await deliver_run(uow, order_created(new_order(), ("AA", 1)), bad)
    assert uow.tables == tables
    assert uow.published == []

"""The order's RPC use cases on the in-memory unit of work (tests/unit/order/fakes.py):
PlaceOrder's idempotency and the saga start it announces, who may read and cancel an
order, ListOrders' keyset pages and WatchOrder's stream. No database, no gRPC."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from services.order import use_cases
from services.order.domain import CANCELLED_BY_CUSTOMER, Order, OrderStatus
from services.order.publishing import order_cancelled, order_created
from shared.auth.identity import Identity, Role
from shared.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from shared.messaging.topics import ORDERS
from shared.money import Money
from shop.events.v1 import inventory_events_pb2, payment_events_pb2
from tests.unit.order.fakes import (
    ADMIN,
    CREDENTIALS,
    CUSTOMER,
    FakeOrderUnitOfWork,
    RowLockWouldWait,
    World,
    catalog_entry,
)

OTHER = Identity(uuid.uuid4(), Role.CUSTOMER)


@pytest.fixture
def world() -> World:
    return World.new()


# --- PlaceOrder ----------------------------------------------------------------------


async def test_a_new_order_is_stored_and_starts_the_saga_once(world: World) -> None:
    a, b = world.usd[0], world.usd[1]
    order = await world.place([(a, 3), (b, 2)])
    assert order.status is OrderStatus.PENDING and order.user_id == CUSTOMER.user_id
    assert order.total == Money(3 * 250 + 2 * 1999, "USD")
    assert world.stored(order.order_id) == order
    # OrderCreated on the orders topic, keyed by the order, committed with it.
    assert [(topic, pub.key) for topic, pub in world.uow.published] == [
        (ORDERS, str(order.order_id))
    ]
    assert world.uow.messages == [order_created(order)]
    # Priced on the caller's own credentials; the idempotency look-up only reads.
    assert world.catalog.lookups == [([a.product_id, b.product_id], CREDENTIALS)]
    assert world.uow.read_only_opens == 1


async def test_a_retry_replays_the_first_order_and_announces_nothing(world: World) -> None:
    a, b = world.usd[0], world.usd[1]
    first = await world.place([(a, 1), (b, 4)], key="k")
    # Answered from the order's own table: no catalog needed, even while it is down.
    world.catalog.failure = Unavailable("the product service is unavailable")
    again = await world.place([(b, 4), (a, 1)], key="k")
    assert again == first
    assert len(world.uow.orders.rows) == 1
    assert world.uow.messages == [order_created(first)]


async def test_the_same_key_with_other_items_is_refused(world: World) -> None:
    first = await world.place([(world.usd[0], 1)], key="k")
    with pytest.raises(FailedPrecondition, match=str(first.order_id)):
        await world.place([(world.usd[0], 2)], key="k")
    assert list(world.uow.orders.rows) == [first.order_id]
    assert len(world.uow.messages) == 1


async def test_a_key_belongs_to_one_user(world: World) -> None:
    mine = await world.place(key="k")
    theirs = await world.place(key="k", user=OTHER)
    assert mine.order_id != theirs.order_id
    assert world.uow.messages == [order_created(mine), order_created(theirs)]


async def test_the_loser_of_a_race_gets_the_winners_order_and_announces_nothing(
    world: World,
) -> None:
    """Both calls found no order for the key; the winner commits while the loser asks
    the catalog, so the loser's insert meets the key taken."""
    winner: list[Order] = []

    async def concurrent_duplicate_commits() -> None:
        world.catalog.during_lookup = None
        winner.append(await world.place(key="k"))

    world.catalog.during_lookup = concurrent_duplicate_commits
    loser = await world.place(key="k")
    assert loser == winner[0]
    assert world.uow.messages == [order_created(loser)]  # the winner's, once


async def test_a_race_lost_to_other_items_is_refused(world: World) -> None:
    async def concurrent_other_order_commits() -> None:
        world.catalog.during_lookup = None
        await world.place([(world.usd[1], 1)], key="k")

    world.catalog.during_lookup = concurrent_other_order_commits
    with pytest.raises(FailedPrecondition, match="different items"):
        await world.place([(world.usd[0], 1)], key="k")
    assert len(world.uow.orders.rows) == 1 and len(world.uow.messages) == 1


@pytest.mark.parametrize("from_cache", [False, True])
async def test_an_order_says_whether_it_was_priced_from_the_cache(
    world: World, from_cache: bool
) -> None:
    world.catalog.from_cache = from_cache
    order = await world.place()
    assert order.priced_from_cache is from_cache
    assert world.stored(order.order_id).priced_from_cache is from_cache


async def test_a_refused_order_writes_and_announces_nothing(world: World) -> None:
    archived = catalog_entry(100, sellable=False)
    world.catalog.entries[archived.product_id] = archived
    with pytest.raises(InvalidArgument, match="items"):
        await world.place([])
    assert world.catalog.lookups == []  # the request is checked before the catalog is asked
    unknown = catalog_entry(1)
    with pytest.raises(NotFound, match=str(unknown.product_id)):
        await world.place([(unknown, 1), (world.usd[1], 1)])
    with pytest.raises(FailedPrecondition, match="not for sale"):
        await world.place([(archived, 1)])
    with pytest.raises(FailedPrecondition, match="EUR, USD"):
        await world.place([(world.usd[0], 1), (world.eur, 1)])
    world.catalog.failure = Unavailable("the product service is unavailable")
    with pytest.raises(Unavailable):
        await world.place()
    assert world.uow.orders.rows == {} and world.uow.published == []


# --- GetOrder and who sees an order ----------------------------------------------------


async def test_the_owner_and_an_admin_read_an_order_others_do_not(world: World) -> None:
    order = await world.place()
    assert await use_cases.get(world.uow, str(order.order_id), CUSTOMER) == order
    assert await use_cases.get(world.uow, str(order.order_id), ADMIN) == order
    with pytest.raises(NotFound) as theirs:
        await use_cases.get(world.uow, str(order.order_id), OTHER)
    # Word for word what a missing order says, so probing ids learns nothing.
    assert theirs.value.message == f"order {order.order_id} does not exist"
    unknown = uuid.uuid4()
    with pytest.raises(NotFound) as missing:
        await use_cases.get(world.uow, str(unknown), CUSTOMER)
    assert missing.value.message == f"order {unknown} does not exist"


@pytest.mark.parametrize("order_id", ["", "12; DROP", "f" * 10_000])
async def test_a_malformed_order_id_is_an_invalid_argument(world: World, order_id: str) -> None:
    for call in (
        use_cases.get(world.uow, order_id, CUSTOMER),
        use_cases.cancel(world.uow, order_id, CUSTOMER.user_id),
    ):
        with pytest.raises(InvalidArgument) as caught:
            await call
        assert caught.value.field == "order_id"


# --- CancelOrder -----------------------------------------------------------------------


async def test_the_owner_cancels_and_order_cancelled_is_announced_once(world: World) -> None:
    order = await world.place()
    cancelled = await use_cases.cancel(world.uow, str(order.order_id), CUSTOMER.user_id)
    assert (cancelled.status, cancelled.status_reason) == (
        OrderStatus.CANCELLED,
        CANCELLED_BY_CUSTOMER,
    )
    assert cancelled.updated_at >= order.updated_at and cancelled.items == order.items
    assert world.stored(order.order_id) == cancelled
    again = await use_cases.cancel(world.uow, str(order.order_id), CUSTOMER.user_id)
    assert again == cancelled  # a retry of a done cancel changes nothing ...
    assert world.uow.messages == [order_created(order), order_cancelled(cancelled)]  # ... once


@pytest.mark.parametrize("caller", [OTHER, ADMIN], ids=["another user", "an admin"])
async def test_only_the_owner_cancels(world: World, caller: Identity) -> None:
    order = await world.place()
    with pytest.raises(NotFound, match="does not exist"):
        await use_cases.cancel(world.uow, str(order.order_id), caller.user_id)
    assert world.stored(order.order_id) == order
    with pytest.raises(NotFound):
        await use_cases.cancel(world.uow, str(uuid.uuid4()), CUSTOMER.user_id)


async def test_a_confirmed_or_rejected_order_cannot_be_cancelled(world: World) -> None:
    confirmed, rejected = await world.place(), await world.place()
    async with world.uow() as uow:
        await use_cases.on_inventory_committed(
            uow, inventory_events_pb2.InventoryCommitted(order_id=str(confirmed.order_id))
        )
        await use_cases.on_inventory_rejected(
            uow, inventory_events_pb2.InventoryRejected(order_id=str(rejected.order_id), sku="X")
        )
    for order, status in ((confirmed, "confirmed"), (rejected, "rejected")):
        settled = world.stored(order.order_id)
        with pytest.raises(FailedPrecondition, match=f"is {status}"):
            await use_cases.cancel(world.uow, str(order.order_id), CUSTOMER.user_id)
        assert world.stored(order.order_id) == settled
    assert len(world.uow.messages) == 2  # the two OrderCreated, no OrderCancelled


async def test_cancelling_an_order_the_saga_cancelled_returns_it_unchanged(
    world: World,
) -> None:
    order = await world.place()
    async with world.uow() as uow:
        failed = payment_events_pb2.PaymentFailed(order_id=str(order.order_id), reason="declined")
        await use_cases.on_payment_failed(uow, failed)
    by_saga = world.stored(order.order_id)
    assert await use_cases.cancel(world.uow, str(order.order_id), CUSTOMER.user_id) == by_saga
    assert by_saga.status_reason == "payment failed: declined"
    assert world.uow.messages == [order_created(order)]  # payment already undid its part


async def test_cancel_locks_the_order(world: World) -> None:
    """An event handler or the saga timeout may be settling it: cancel waits for them."""
    order = await world.place()
    world.uow.orders.held_elsewhere.add(order.order_id)
    with pytest.raises(RowLockWouldWait):
        await use_cases.cancel(world.uow, str(order.order_id), CUSTOMER.user_id)


# --- ListOrders ------------------------------------------------------------------------


async def pages(uow: FakeOrderUnitOfWork, user: Identity, size: int) -> list[list[uuid.UUID]]:
    seen, token = [], ""
    while True:
        orders, token = await use_cases.list_page(uow, user.user_id, size, token)
        seen.append([o.order_id for o in orders])
        if not token:
            return seen


async def test_orders_are_listed_newest_first_a_page_at_a_time(world: World) -> None:
    placed = [(await world.place([(world.usd[2], q)])).order_id for q in range(1, 6)]
    await world.place(user=OTHER)
    newest_first = placed[::-1]
    assert await pages(world.uow, CUSTOMER, 2) == [
        newest_first[0:2],
        newest_first[2:4],
        [placed[0]],
    ]
    # A last page that is exactly full says there is no next one.
    assert await pages(world.uow, CUSTOMER, 5) == [newest_first]
    orders, token = await use_cases.list_page(world.uow, CUSTOMER.user_id, 0, "")  # default 20
    assert [o.order_id for o in orders] == newest_first and token == ""
    assert await pages(world.uow, Identity(uuid.uuid4(), Role.CUSTOMER), 3) == [[]]


async def test_orders_placed_at_the_same_instant_are_each_listed_once(world: World) -> None:
    placed = [await world.place() for _ in range(5)]
    instant = placed[0].created_at
    for order in placed:
        world.uow.orders.rows[order.order_id] = replace(order, created_at=instant)
    listed = [i for page in await pages(world.uow, CUSTOMER, 2) for i in page]
    assert listed == sorted((o.order_id for o in placed), reverse=True)


def _token(cursor: str) -> str:
    return base64.urlsafe_b64encode(cursor.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "%%%not base64",
        _token("[1, 2]"),
        _token('{"t": 5, "id": 7}'),
        _token(json.dumps({"t": "2024-01-01T00:00:00", "id": str(uuid.uuid4())})),
        _token(json.dumps({"t": "2024-01-01T00:00:00+00:00", "id": "not-a-uuid"})),
        # Found by the fuzzer (tests/fuzz): these two once ended as INTERNAL, the first
        # overflowing in the UTC conversion, the second the JSON parser's recursion.
        _token(json.dumps({"t": "0001-01-01T00:00:00+14:00", "id": str(uuid.uuid4())})),
        _token("[" * 2001 + "0" + "]" * 2001),
    ],
    ids=["garbage", "a list", "wrong types", "no offset", "bad id", "overflows", "deep"],
)
async def test_a_page_token_this_service_did_not_issue_is_refused(world: World, token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await use_cases.list_page(world.uow, CUSTOMER.user_id, 2, token)
    assert caught.value.field == "page_token"


@pytest.mark.parametrize("size", [-1, 101])
async def test_a_page_size_out_of_range_is_refused(world: World, size: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await use_cases.list_page(world.uow, CUSTOMER.user_id, size, "")
    assert caught.value.field == "page_size"


# --- WatchOrder ------------------------------------------------------------------------


async def next_of(stream: AsyncIterator[Order]) -> Order:
    return await anext(stream)


async def test_a_watch_streams_pending_then_confirmed_then_ends(world: World) -> None:
    order = await world.place()
    stream = use_cases.watch(world.uow, world.hub, str(order.order_id), CUSTOMER, recheck=60)
    assert (await anext(stream)).status is OrderStatus.PENDING
    assert world.hub.watcher_count == 1  # watching began before that first read
    following = asyncio.create_task(next_of(stream))
    await asyncio.sleep(0)
    async with world.uow() as uow:  # the commit wakes the watcher, well before the recheck
        committed = inventory_events_pb2.InventoryCommitted(order_id=str(order.order_id))
        await use_cases.on_inventory_committed(uow, committed)
    confirmed = await asyncio.wait_for(following, 5)
    assert confirmed == world.stored(order.order_id) and confirmed.is_final
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert world.hub.watcher_count == 0


async def test_a_missed_notification_is_made_up_for_by_the_recheck(world: World) -> None:
    order = await world.place()
    world.uow.hub = None  # nothing will wake the watcher
    stream = use_cases.watch(world.uow, world.hub, str(order.order_id), CUSTOMER, recheck=0.01)
    assert (await anext(stream)).status is OrderStatus.PENDING
    await use_cases.cancel(world.uow, str(order.order_id), CUSTOMER.user_id)
    cancelled = await asyncio.wait_for(anext(stream), 5)
    assert cancelled.status is OrderStatus.CANCELLED
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert world.hub.watcher_count == 0


async def test_an_admin_watching_a_final_order_gets_one_message(world: World) -> None:
    order = await world.place()
    await use_cases.cancel(world.uow, str(order.order_id), CUSTOMER.user_id)
    stream = use_cases.watch(world.uow, world.hub, str(order.order_id), ADMIN, recheck=60)
    assert [o.status async for o in stream] == [OrderStatus.CANCELLED]


async def test_another_users_order_cannot_be_watched(world: World) -> None:
    order = await world.place()
    stream = use_cases.watch(world.uow, world.hub, str(order.order_id), OTHER, recheck=60)
    with pytest.raises(NotFound, match="does not exist"):
        await anext(stream)
    assert world.hub.watcher_count == 0

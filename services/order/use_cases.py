"""The order's use cases: one function per RPC and per saga event, on a unit of work.

They know the domain and the ports below, nothing of gRPC, asyncpg or Kafka:
grpc_api.py calls them with plain values, the consumer with the unpacked event
message, and the tests with a fake unit of work (tests/unit/order/fakes.py).

Saga events never raise for a stale, duplicate or unknown order (they log and
return, changing nothing); an event whose order id is no UUID raises, which sends
it to the dead-letter topic after the consumer's retries.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from services.order.domain import (
    CatalogEntry,
    Order,
    OrderPlaced,
    OrderStep,
    SagaOutcome,
    cancel_by_customer,
    cancel_events,
    inventory_committed,
    inventory_rejected,
    order_request,
    payment_failed,
    place_order,
    progress,
    replay,
    settle,
    time_out,
)
from shared.auth.identity import Identity
from shared.errors import InvalidArgument, NotFound
from shared.logs import journal
from shared.messaging.unit_of_work import UnitOfWork
from shared.validation import decode_page_token, encode_page_token, page_size, parse_uuid
from shop.events.v1 import inventory_events_pb2, payment_events_pb2

log = logging.getLogger(__name__)

# The caller's authorization metadata, passed on to the catalog: a service never
# calls a peer with more authority than the user who asked it to.
Credentials = tuple[tuple[str, str | bytes], ...]


# --- ports ---------------------------------------------------------------------------


class OrderRepository(Protocol):
    async def add(self, order: Order) -> Order:
        """Stores a new order; returns it, or the caller's order that already holds its
        idempotency key (a concurrent duplicate won)."""
        ...

    async def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None: ...

    async def by_idempotency_key(self, user_id: uuid.UUID, key: str) -> Order | None: ...

    async def list_page(
        self, *, user_id: uuid.UUID, limit: int, before: tuple[datetime, uuid.UUID] | None
    ) -> list[Order]:
        """Newest first, by (created_at, order_id), strictly before ``before``."""
        ...

    async def lock_overdue(
        self, *, timeout_seconds: float, ceiling_seconds: float, limit: int
    ) -> list[Order]:
        """Pending orders whose time is up, locked; rows another holds are skipped."""
        ...

    async def save(self, order: Order) -> None: ...


class OrderUnitOfWork(UnitOfWork, Protocol):
    @property
    def orders(self) -> OrderRepository: ...

    def record(self, *events: object) -> None: ...

    def continuing_traces(
        self, name: str, order_ids: Sequence[uuid.UUID]
    ) -> AbstractAsyncContextManager[None]:
        """Work inside joins each order's own trace (a step no event caused)."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, read_only: bool = False) -> OrderUnitOfWork: ...


@dataclass(frozen=True)
class CatalogLookup:
    """What PlaceOrder prices from: the found products by id, and where they came from."""

    entries: dict[uuid.UUID, CatalogEntry]
    # True: the product service was unreachable, these are the last entries seen.
    from_cache: bool = False


class Catalog(Protocol):
    async def lookup_with_fallback(
        self, product_ids: Sequence[uuid.UUID], credentials: Credentials
    ) -> CatalogLookup: ...


class StatusWatch(Protocol):
    async def wait(self, timeout: float) -> None: ...


class StatusHub(Protocol):
    def watch(self, order_id: uuid.UUID) -> AbstractContextManager[StatusWatch]: ...


# --- RPCs ----------------------------------------------------------------------------


async def place(
    uow: UnitOfWorkFactory,
    catalog: Catalog,
    *,
    user_id: uuid.UUID,
    idempotency_key: str,
    items: Sequence[tuple[str, int]],
    credentials: Credentials,
) -> Order:
    wanted = order_request(idempotency_key, items)
    # A retry is answered from our own table, so it succeeds even while the catalog is down.
    async with uow(read_only=True) as reading:
        existing = await reading.orders.by_idempotency_key(user_id, wanted.idempotency_key)
    if existing is not None:
        return replay(existing, wanted)
    # While product is unreachable, this may be the last known catalog (degraded mode).
    found = await catalog.lookup_with_fallback(wanted.product_ids, credentials)
    order = place_order(
        user_id=user_id, request=wanted, catalog=found.entries, priced_from_cache=found.from_cache
    )
    async with uow() as writing:
        stored = await writing.orders.add(order)
        # Only the call that created the order starts its saga; a concurrent
        # duplicate that lost the race got the winner's order back.
        if stored.order_id == order.order_id:
            writing.record(OrderPlaced(stored))
    journal("order %s placed by %s: %d lines", stored.order_id, user_id, len(stored.items))
    return replay(stored, wanted)


async def get(uow: UnitOfWorkFactory, order_id: str, caller: Identity) -> Order:
    return await _read(uow, parse_uuid(order_id, "order_id"), caller)


async def cancel(uow: UnitOfWorkFactory, order_id: str, user_id: uuid.UUID) -> Order:
    wanted = parse_uuid(order_id, "order_id")
    async with uow() as writing:
        # Locked: an event handler or the saga timeout may be settling it right now.
        order = await writing.orders.get(wanted, for_update=True)
        # Only the owner cancels; to anyone else the order does not exist.
        if order is None or order.user_id != user_id:
            raise _not_found(wanted)
        cancelled = cancel_by_customer(order)
        if cancelled is not order:  # a retry of a done cancel changes nothing
            await writing.orders.save(cancelled)
        writing.record(*cancel_events(order, cancelled))
    return cancelled


async def watch(
    uow: UnitOfWorkFactory, hub: StatusHub, order_id: str, caller: Identity, recheck: float
) -> AsyncIterator[Order]:
    """The order now, then each change of its status or saga step, until a final status.
    ``recheck``: seconds between reads without a notification, in case one was missed."""
    wanted = parse_uuid(order_id, "order_id")
    # Watching before the first read: a change committed in between still wakes us.
    with hub.watch(wanted) as status_changed:
        order = await _read(uow, wanted, caller)
        yield order
        while not order.is_final:
            await status_changed.wait(recheck)
            latest = await _read(uow, wanted, caller)
            if (latest.status, latest.step) != (order.status, order.step):
                yield latest
            order = latest


async def list_page(
    uow: UnitOfWorkFactory, user_id: uuid.UUID, requested_size: int, page_token: str
) -> tuple[list[Order], str]:
    """One page of the user's orders, newest first, and the next page's token ("" at the end)."""
    limit = page_size(requested_size)
    before = _page_cursor(page_token)
    async with uow(read_only=True) as reading:
        # One extra row tells whether another page exists.
        orders = await reading.orders.list_page(user_id=user_id, limit=limit + 1, before=before)
    if len(orders) <= limit:
        return orders, ""
    orders = orders[:limit]
    last = orders[-1]
    return orders, encode_page_token({"t": last.created_at.isoformat(), "id": str(last.order_id)})


# --- the saga's steps and outcomes, decided by inventory and payment -------------------


async def on_inventory_reserved(
    uow: OrderUnitOfWork, reserved: inventory_events_pb2.InventoryReserved
) -> None:
    await _progress(uow, reserved.order_id, OrderStep.RESERVED)


async def on_payment_succeeded(
    uow: OrderUnitOfWork, succeeded: payment_events_pb2.PaymentSucceeded
) -> None:
    await _progress(uow, succeeded.order_id, OrderStep.CHARGED)


async def on_inventory_committed(
    uow: OrderUnitOfWork, committed: inventory_events_pb2.InventoryCommitted
) -> None:
    await _settle(uow, committed.order_id, inventory_committed())


async def on_inventory_rejected(
    uow: OrderUnitOfWork, rejected: inventory_events_pb2.InventoryRejected
) -> None:
    await _settle(uow, rejected.order_id, inventory_rejected(rejected.sku))


async def on_payment_failed(uow: OrderUnitOfWork, failed: payment_events_pb2.PaymentFailed) -> None:
    await _settle(uow, failed.order_id, payment_failed(failed.reason))


async def _settle(uow: OrderUnitOfWork, order_id_text: str, outcome: SagaOutcome) -> None:
    order_id = parse_uuid(order_id_text, "order_id")
    # Locked: CancelOrder, the saga timeout or a handler of the other topic may
    # be deciding about this order right now; whoever locks first wins.
    order = await uow.orders.get(order_id, for_update=True)
    if order is None:
        log.debug("saga outcome for unknown order %s; ignored", order_id)
        return
    settled = settle(order, outcome)
    if settled is None:
        log.debug("saga outcome for order %s, already %s; ignored", order_id, order.status)
        return
    await uow.orders.save(settled)
    log.info("order %s is %s", order_id, settled.status)


async def _progress(uow: OrderUnitOfWork, order_id_text: str, step: OrderStep) -> None:
    order_id = parse_uuid(order_id_text, "order_id")
    # Locked like _settle: an outcome of the other topic may be settling it right now.
    order = await uow.orders.get(order_id, for_update=True)
    if order is None:
        log.debug("saga step for unknown order %s; ignored", order_id)
        return
    moved = progress(order, step)
    if moved is None:
        log.debug(
            "saga step %s for order %s, %s at %s; ignored", step, order_id, order.status, order.step
        )
        return
    await uow.orders.save(moved)
    log.debug("order %s is %s", order_id, step)


# --- the saga timeout ----------------------------------------------------------------


async def cancel_overdue(
    uow: UnitOfWorkFactory, *, timeout_seconds: float, ceiling_seconds: float, limit: int
) -> int:
    """Cancels up to ``limit`` overdue pending orders (adapters/saga_timeout.py decides
    when); returns how many."""
    async with uow() as writing:
        overdue = await writing.orders.lock_overdue(
            timeout_seconds=timeout_seconds, ceiling_seconds=ceiling_seconds, limit=limit
        )
        # The cancellation joins each order's own trace, beside its stalled saga.
        ids = [order.order_id for order in overdue]
        async with writing.continuing_traces("saga timeout cancels the order", ids):
            for order in overdue:
                cancelled = time_out(order)
                await writing.orders.save(cancelled)
                writing.record(*cancel_events(order, cancelled))
    if overdue:
        log.info("saga timeout cancelled %d orders", len(overdue))
    return len(overdue)


# --- helpers -------------------------------------------------------------------------


async def _read(uow: UnitOfWorkFactory, order_id: uuid.UUID, caller: Identity) -> Order:
    """The order as ``caller`` may see it: their own, or any for an admin."""
    async with uow(read_only=True) as reading:
        order = await reading.orders.get(order_id)
    # Another user's order reads exactly like a missing one: ids leak nothing.
    if order is None or (order.user_id != caller.user_id and not caller.is_admin):
        raise _not_found(order_id)
    return order


def _page_cursor(token: str) -> tuple[datetime, uuid.UUID] | None:
    cursor = decode_page_token(token)
    if cursor is None:
        return None
    moment, order_id = cursor.get("t"), cursor.get("id")
    try:
        if not isinstance(moment, str) or not isinstance(order_id, str):
            raise ValueError("cursor fields must be strings")
        after = datetime.fromisoformat(moment)
        if after.tzinfo is None:
            raise ValueError("cursor time must carry its offset")
        # In UTC, as the driver would send it: a time near year 1 or 9999 may not fit
        # (OverflowError), and no token this service issued holds one.
        return after.astimezone(UTC), uuid.UUID(order_id)
    except (ValueError, OverflowError):
        raise InvalidArgument("page_token", "is not a token this service issued") from None


def _not_found(order_id: uuid.UUID) -> NotFound:
    return NotFound(f"order {order_id} does not exist")

"""Inventory's use cases: one function per RPC and per saga event, on a unit of work.

They know the domain and the ports below, nothing of gRPC, asyncpg or Kafka:
grpc_api.py calls the RPCs with plain values, the consumer calls the saga
events with the unpacked event message (subscriptions.py), and the unit tests
call both with a fake unit of work (tests/unit/inventory/fakes.py).

Each saga event runs inside the consumer's unit of work (many events per
transaction), claims or locks the order's reservation before deciding, and
never raises for a stale, duplicate or out-of-order event: it logs and returns.
It raises only for a malformed event (InvalidArgument), which the consumer
retries and then dead-letters.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message

from services.inventory.domain import (
    PAYMENT_FAILED,
    InventoryEvent,
    Line,
    Reservation,
    ReservationState,
    Step,
    Stock,
    Trigger,
    moved_on,
    parse_sku,
    parse_skus,
    react,
    rejection_reason,
    release_reason,
    requested_lines,
    require_available,
    reservation_outcome,
)
from shared.errors import NotFound
from shared.messaging.unit_of_work import UnitOfWork
from shared.money import Money
from shared.proto_convert import money_from_proto
from shared.validation import parse_uuid, uuids_in
from shop.events.v1 import order_events_pb2, payment_events_pb2

log = logging.getLogger(__name__)


# --- ports ----------------------------------------------------------------------------------------


class StockRepository(Protocol):
    async def set_available(self, sku: str, available: int) -> Stock:
        """Sets available units, booking the difference as received (or written off);
        creates the row on first use."""
        ...

    async def get(self, sku: str) -> Stock | None: ...

    async def get_many(self, skus: list[str]) -> list[Stock]:
        """The rows that exist, in SKU order."""
        ...

    async def lock_in_order(self, skus: Collection[str], order_ids: Collection[uuid.UUID]) -> None:
        """Locks the stock rows of ``skus`` and of these orders' reservations, in SKU order."""
        ...


@dataclass(frozen=True, slots=True)
class Claim:
    # False: the order already had a reservation (or a tombstone); nothing was done.
    claimed: bool
    # The first SKU that could not be held, and then nothing is held; None: every line is.
    short: str | None = None


@dataclass(frozen=True, slots=True)
class SingleLineOrder:
    """An order of one SKU, as the merged (hot-SKU) reservation path takes it."""

    order_id: uuid.UUID
    user_id: uuid.UUID
    total: Money
    quantity: int


class ReservationRepository(Protocol):
    async def claim_and_hold(
        self,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        total: Money,
        lines: Sequence[Line],
        state: ReservationState,
    ) -> Claim:
        """Creates the order's reservation in ``state`` with its lines (sorted by SKU), then
        holds every line or none of them; an unknown SKU is short. Nothing at all if the
        order already has a reservation."""
        ...

    async def claim_and_hold_same_sku(
        self,
        sku: str,
        orders: Sequence[SingleLineOrder],
        claimed_as: ReservationState,
        if_short: ReservationState,
        reason: str,
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        """claim_and_hold for each order in turn (first fit), the ones not held settled
        ``if_short`` with ``reason``: returns (claimed, held)."""
        ...

    async def reject(
        self,
        order_id: uuid.UUID,
        claimed_as: ReservationState,
        to: ReservationState,
        reason: str,
    ) -> None:
        """Settles a claim whose stock could not be held, in the claim's transaction."""
        ...

    async def lock_or_create(
        self,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        state: ReservationState,
        reason: str,
    ) -> tuple[ReservationState | None, bool]:
        """Locks the order's reservation: (its state, False); if there is none, creates one
        without lines in ``state``: (None, True)."""
        ...

    async def advance(
        self, order_id: uuid.UUID, current: ReservationState, step: Step, reason: str
    ) -> bool:
        """Compare-and-set from ``current`` to ``step.to``, moving the lines' stock by
        ``step.move``; False (nothing changed) if the reservation was not in ``current``."""
        ...

    async def get(self, order_id: uuid.UUID) -> Reservation | None: ...


class InventoryUnitOfWork(UnitOfWork, Protocol):
    @property
    def stock(self) -> StockRepository: ...

    @property
    def reservations(self) -> ReservationRepository: ...

    def record(self, *events: InventoryEvent) -> None:
        """Stages domain events: published if, and only if, the transaction commits."""
        ...


UnitOfWorkFactory = Callable[[], InventoryUnitOfWork]


# --- RPCs -----------------------------------------------------------------------------------------


async def set_stock(unit_of_work: UnitOfWorkFactory, sku: str, available: int) -> Stock:
    """Creates the SKU's row on first use, so an unknown SKU is not NOT_FOUND here."""
    sku = parse_sku(sku)
    available = require_available(available)
    async with unit_of_work() as uow:
        return await uow.stock.set_available(sku, available)


async def get_stock(unit_of_work: UnitOfWorkFactory, sku: str) -> Stock:
    sku = parse_sku(sku)
    async with unit_of_work() as uow:
        stock = await uow.stock.get(sku)
    if stock is None:
        raise NotFound(f"no stock is recorded for sku {sku!r}")
    return stock


async def batch_get_stock(
    unit_of_work: UnitOfWorkFactory, skus: Sequence[str]
) -> tuple[list[Stock], list[str]]:
    """(the stock of the SKUs that have some, in SKU order; the others, in request order)."""
    wanted = parse_skus(skus)
    async with unit_of_work() as uow:
        stocks = await uow.stock.get_many(wanted)
    found = {s.sku for s in stocks}
    return stocks, [sku for sku in wanted if sku not in found]


# --- the order saga -------------------------------------------------------------------------------


async def reserve(uow: InventoryUnitOfWork, created: order_events_pb2.OrderCreated) -> None:
    """OrderCreated: hold every line of the order, or reject it naming the first short SKU."""
    order_id = parse_uuid(created.order_id, "order_id")
    user_id = parse_uuid(created.user_id, "user_id")
    total = money_from_proto(created.total, "total")
    lines = requested_lines([(line.sku, line.quantity) for line in created.lines])
    step = react(None, Trigger.ORDER_CREATED)
    assert step is not None and step.if_short is not None  # the domain's table says so
    claim = await uow.reservations.claim_and_hold(order_id, user_id, total, lines, step.to)
    if not claim.claimed:
        # Every existing state ignores OrderCreated, so which one it is does not matter.
        log.debug("order %s already has a reservation; OrderCreated ignored", order_id)
        return
    if claim.short is not None:
        await uow.reservations.reject(
            order_id, step.to, step.if_short, rejection_reason(claim.short)
        )
    uow.record(reservation_outcome(order_id, user_id, total, claim.short))


async def reserve_run(
    uow: InventoryUnitOfWork, events: list[order_events_pb2.OrderCreated]
) -> None:
    """A run of OrderCreated at once: single-line orders of one SKU share one UPDATE.

    The outcome is what ``reserve`` would give each event in turn; only the
    number of statements differs. Orders of several SKUs take the per-event path,
    after the single-line orders before them on any of their SKUs (first come,
    first served).
    """
    waiting: dict[str, list[SingleLineOrder]] = {}
    for created in events:
        lines = requested_lines([(line.sku, line.quantity) for line in created.lines])
        if len(lines) != 1:
            await _reserve_same_sku(uow, {line.sku: waiting.pop(line.sku, []) for line in lines})
            await reserve(uow, created)
            continue
        order = SingleLineOrder(
            order_id=parse_uuid(created.order_id, "order_id"),
            user_id=parse_uuid(created.user_id, "user_id"),
            total=money_from_proto(created.total, "total"),
            quantity=lines[0].quantity,
        )
        waiting.setdefault(lines[0].sku, []).append(order)
    await _reserve_same_sku(uow, waiting)


async def _reserve_same_sku(
    uow: InventoryUnitOfWork, by_sku: dict[str, list[SingleLineOrder]]
) -> None:
    step = react(None, Trigger.ORDER_CREATED)
    assert step is not None and step.if_short is not None  # the domain's table says so
    for sku in sorted(by_sku):  # stock rows are locked in SKU order, as everywhere
        batch = by_sku[sku]
        if not batch:
            continue
        claimed, held = await uow.reservations.claim_and_hold_same_sku(
            sku, batch, step.to, step.if_short, rejection_reason(sku)
        )
        for order in batch:
            if order.order_id not in claimed:
                log.debug("order %s already has a reservation; ignored", order.order_id)
                continue
            short = None if order.order_id in held else sku
            uow.record(reservation_outcome(order.order_id, order.user_id, order.total, short))


async def commit(uow: InventoryUnitOfWork, paid: payment_events_pb2.PaymentSucceeded) -> None:
    """PaymentSucceeded: the held units are sold."""
    order_id = parse_uuid(paid.order_id, "order_id")
    await _advance_reserved(uow, order_id, Trigger.PAYMENT_SUCCEEDED, reason="")


async def release_on_payment_failure(
    uow: InventoryUnitOfWork, failed: payment_events_pb2.PaymentFailed
) -> None:
    """PaymentFailed: the held units are available again."""
    order_id = parse_uuid(failed.order_id, "order_id")
    await _advance_reserved(uow, order_id, Trigger.PAYMENT_FAILED, reason=PAYMENT_FAILED)


async def _advance_reserved(
    uow: InventoryUnitOfWork, order_id: uuid.UUID, trigger: Trigger, reason: str
) -> None:
    """Applies ``trigger`` to a RESERVED reservation; any other state ignores it.

    A payment event does something only to a RESERVED reservation (the domain's
    table), so one compare-and-set from RESERVED, which locks the row, decides.
    """
    step = react(ReservationState.RESERVED, trigger)
    assert step is not None  # the domain's table says so
    if not await uow.reservations.advance(order_id, ReservationState.RESERVED, step, reason):
        log.debug("reservation of order %s is not reserved; %s ignored", order_id, trigger)
        return
    if (event := moved_on(order_id, step.to, reason)) is not None:
        uow.record(event)


async def release_on_cancel(
    uow: InventoryUnitOfWork, cancelled: order_events_pb2.OrderCancelled
) -> None:
    """OrderCancelled: held or sold units are available again; before any reservation,
    a tombstone that a late OrderCreated finds (and then holds nothing)."""
    order_id = parse_uuid(cancelled.order_id, "order_id")
    user_id = parse_uuid(cancelled.user_id, "user_id")
    reason = release_reason(cancelled.reason)
    tombstone = react(None, Trigger.ORDER_CANCELLED)
    assert tombstone is not None  # the domain's table says so
    state, created = await uow.reservations.lock_or_create(order_id, user_id, tombstone.to, reason)
    if created:
        log.debug("order %s cancelled before its reservation; tombstone written", order_id)
        return
    step = react(state, Trigger.ORDER_CANCELLED)
    if step is None:
        log.debug("reservation of order %s is %s; OrderCancelled ignored", order_id, state)
        return
    assert state is not None  # None always reacts, with the tombstone above
    if not await uow.reservations.advance(order_id, state, step, reason):
        raise RuntimeError(f"reservation {order_id} changed state while locked")
    if (event := moved_on(order_id, step.to, reason)) is not None:
        uow.record(event)


# The events that move an existing reservation on, by its order id.
ORDER_ID_EVENTS = (
    order_events_pb2.OrderCancelled,
    payment_events_pb2.PaymentSucceeded,
    payment_events_pb2.PaymentFailed,
)


async def lock_stock(uow: InventoryUnitOfWork, messages: list[Message]) -> None:
    """The stock rows a batch will change, locked first and in SKU order (see
    consumer.RowLocks): a new order's SKUs, and those of the reservations that a
    payment or a cancellation moves on. An unreadable id is left out here: the
    event's own use case is the one to refuse it."""
    skus: set[str] = set()
    order_ids: list[str] = []
    for message in messages:
        if isinstance(message, order_events_pb2.OrderCreated):
            skus.update(line.sku for line in message.lines)
        elif isinstance(message, ORDER_ID_EVENTS):
            order_ids.append(message.order_id)
    await uow.stock.lock_in_order(skus, uuids_in(order_ids))

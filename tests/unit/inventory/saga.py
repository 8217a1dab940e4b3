"""The saga's events delivered to inventory's use cases on the fake, and what it then holds."""

from __future__ import annotations

import uuid

from google.protobuf.message import Message

from services.inventory import use_cases
from services.inventory.domain import ReservationState
from shop.events.v1 import order_events_pb2, payment_events_pb2
from tests.unit.inventory.fakes import FakeInventoryUnitOfWork


async def handle(uow: FakeInventoryUnitOfWork, message: Message) -> None:
    """The use case subscriptions.py names for the message's type."""
    match message:
        case order_events_pb2.OrderCreated():
            await use_cases.reserve(uow, message)
        case order_events_pb2.OrderCancelled():
            await use_cases.release_on_cancel(uow, message)
        case payment_events_pb2.PaymentSucceeded():
            await use_cases.commit(uow, message)
        case payment_events_pb2.PaymentFailed():
            await use_cases.release_on_payment_failure(uow, message)
        case _:
            raise TypeError(f"inventory subscribes to no {type(message).__name__}")


async def deliver(uow: FakeInventoryUnitOfWork, *messages: Message) -> None:
    """Each message in its own transaction, as the consumer may deliver it."""
    for message in messages:
        async with uow:
            await handle(uow, message)


async def deliver_run(
    uow: FakeInventoryUnitOfWork, *created: order_events_pb2.OrderCreated
) -> None:
    """A run of OrderCreated in one transaction, as the consumer hands a batch over."""
    async with uow:
        await use_cases.reserve_run(uow, list(created))


async def set_stock(uow: FakeInventoryUnitOfWork, sku: str, available: int) -> None:
    async with uow:
        await uow.stock.set_available(sku, available)


def stock(uow: FakeInventoryUnitOfWork, sku: str) -> tuple[int, int, int, int]:
    """(available, reserved, sold, total_received)."""
    row = uow.tables.stock[sku]
    return row.available, row.reserved, row.sold, row.total_received


def state(uow: FakeInventoryUnitOfWork, order_id: str) -> ReservationState | None:
    row = uow.tables.reservations.get(uuid.UUID(order_id))
    return None if row is None else row.state


def published(uow: FakeInventoryUnitOfWork, order_id: str) -> list[Message]:
    """The messages published for one order (its record key), in order."""
    return [p.message for _, p in uow.published if p.key == order_id]


def published_types(uow: FakeInventoryUnitOfWork, order_id: str) -> list[str]:
    return [type(m).__name__ for m in published(uow, order_id)]


def audit(uow: FakeInventoryUnitOfWork) -> None:
    """The saga audit's invariants: what stock says is reserved and sold is what the
    RESERVED and COMMITTED reservations hold."""
    uow.tables.check()
    for sku, row in uow.tables.stock.items():
        lines = [
            (r.state, r.lines[sku]) for r in uow.tables.reservations.values() if sku in r.lines
        ]
        held = sum(q for s, q in lines if s is ReservationState.RESERVED)
        sold = sum(q for s, q in lines if s is ReservationState.COMMITTED)
        assert (row.reserved, row.sold) == (held, sold), (sku, row, lines)

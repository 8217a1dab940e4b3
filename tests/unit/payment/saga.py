"""What payment's saga tests deliver, one transaction each as the consumer would, and how
they read what came of it."""

from __future__ import annotations

import uuid

from google.protobuf.message import Message

from services.payment import use_cases
from services.payment.domain import PaymentState
from services.payment.use_cases import ProviderAnswers
from shared.money import Money
from shop.events.v1 import inventory_events_pb2, order_events_pb2
from tests.unit.payment.fakes import FakePaymentUnitOfWork, FixedAnswers, books_disagree

S = PaymentState
SUCCEEDED = "PaymentSucceeded"
FAILED = "PaymentFailed"
REFUNDED = "PaymentRefunded"
APPROVE_ALL = FixedAnswers()


async def funded(uow: FakePaymentUnitOfWork, amount: int) -> uuid.UUID:
    """A new user whose wallet was topped up with ``amount`` the way TopUp books it."""
    user = uuid.uuid4()
    await use_cases.top_up(
        uow, user_id=user, amount=Money(amount, "USD"), idempotency_key="seed", currency="USD"
    )
    return user


async def handle(
    uow: FakePaymentUnitOfWork, message: Message, answers: ProviderAnswers = APPROVE_ALL
) -> None:
    """The use case the consumer's subscription hands ``message`` to."""
    if isinstance(message, inventory_events_pb2.InventoryReserved):
        await use_cases.charge(uow, message, answers=answers)
    else:
        assert isinstance(message, order_events_pb2.OrderCancelled)
        await use_cases.refund_on_cancel(uow, message)


async def deliver(
    uow: FakePaymentUnitOfWork, message: Message, answers: ProviderAnswers = APPROVE_ALL
) -> None:
    """One delivery, in its own transaction."""
    async with uow:
        await handle(uow, message, answers)


def announced(uow: FakePaymentUnitOfWork, order_id: uuid.UUID) -> list[str]:
    """The event types published for the order, in order; every one keyed by it."""
    found = []
    for topic, publication in uow.published:
        if publication.key == str(order_id):
            assert topic == "shop.payments.v1"
            found.append(type(publication.message).__name__)
    return found


def assert_books_balance(uow: FakePaymentUnitOfWork) -> None:
    assert books_disagree(uow) == []

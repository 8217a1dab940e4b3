"""Payment charges an order once, with no database: on InventoryReserved it books the
provider's answer, and a redelivery, a re-emitted event or an unreadable one changes nothing.

Each delivery runs in its own transaction of the fake unit of work, as the consumer
would run it, but without the consumer's processed_events: the use cases themselves
must make a repeated event change nothing and announce nothing.
"""

from __future__ import annotations

import uuid

import pytest
from google.protobuf.message import Message

from services.payment import use_cases
from services.payment.domain import DECLINED_BY_PROVIDER, INSUFFICIENT_FUNDS
from shared.errors import InvalidArgument
from shared.money import Money
from shop.common.v1 import money_pb2
from shop.events.v1 import inventory_events_pb2, order_events_pb2, payment_events_pb2
from tests.support.payment_events import cancelled, reserved
from tests.unit.payment.fakes import FakePaymentUnitOfWork, FixedAnswers
from tests.unit.payment.saga import (
    FAILED,
    SUCCEEDED,
    S,
    announced,
    assert_books_balance,
    deliver,
    funded,
    handle,
)

# --- charge once --------------------------------------------------------------------------------


async def test_a_reservation_charges_the_wallet_once_and_announces_it(
    uow: FakePaymentUnitOfWork,
) -> None:
    user, order = await funded(uow, 5000), uuid.uuid4()
    await deliver(uow, reserved(order, user, 1500))

    assert uow.wallets.balance(user) == 3500
    payment = uow.payments.rows[order]
    assert (payment.state, payment.user_id, payment.amount) == (S.CHARGED, user, Money(1500, "USD"))
    assert uow.ledger.of_order(order) == ["charge"]
    assert announced(uow, order) == [SUCCEEDED]
    succeeded = uow.messages[-1]
    assert isinstance(succeeded, payment_events_pb2.PaymentSucceeded)
    assert succeeded.order_id == str(order)
    assert succeeded.charge_id == str(payment.charge_id)
    assert (succeeded.amount.amount_minor, succeeded.amount.currency) == (1500, "USD")
    assert_books_balance(uow)


async def test_redelivery_charges_nothing_more_and_announces_nothing(
    uow: FakePaymentUnitOfWork,
) -> None:
    user, order = await funded(uow, 5000), uuid.uuid4()
    event = reserved(order, user, 1500)
    await deliver(uow, event)
    before, published = uow.payments.rows[order], len(uow.published)

    await deliver(uow, event)  # redelivered, or re-emitted with a new event id
    await deliver(uow, reserved(order, user, 99))  # the same order at another amount

    assert uow.wallets.balance(user) == 3500
    assert uow.payments.rows[order] == before
    assert uow.ledger.of_order(order) == ["charge"]
    assert len(uow.published) == published
    assert_books_balance(uow)


async def test_one_transaction_holding_a_batch_with_a_duplicate(uow: FakePaymentUnitOfWork) -> None:
    """The consumer applies a poll's events in one transaction, its wallets locked first."""
    user, other = await funded(uow, 1000), await funded(uow, 1000)
    orders = [uuid.uuid4() for _ in range(3)]
    batch: list[Message] = [reserved(o, user, 200) for o in orders]
    batch += [reserved(orders[0], user, 200), cancelled(uuid.uuid4(), other)]
    async with uow:
        await use_cases.lock_wallets(uow, batch)
        for message in batch:
            await handle(uow, message)
    assert uow.wallets.locks == [sorted([user, other])]
    assert uow.wallets.balance(user) == 400
    for order in orders:
        assert announced(uow, order) == [SUCCEEDED]
    assert_books_balance(uow)


async def test_wallets_are_locked_in_user_order_and_unreadable_ids_left_to_the_handler(
    uow: FakePaymentUnitOfWork,
) -> None:
    users = sorted([await funded(uow, 10) for _ in range(4)], reverse=True)
    unknown = uuid.uuid4()  # no wallet: nothing to lock
    batch: list[Message] = [
        reserved(uuid.uuid4(), users[0], 1),
        cancelled(uuid.uuid4(), users[1]),
        reserved(uuid.uuid4(), users[0], 1),
        inventory_events_pb2.InventoryReserved(order_id="x", user_id="not-a-uuid"),
        reserved(uuid.uuid4(), unknown, 1),
        payment_events_pb2.PaymentFailed(order_id=str(users[3])),  # no event payment handles
    ]
    async with uow:
        await use_cases.lock_wallets(uow, batch)
    assert uow.wallets.locks == [sorted(users[:2])]


# --- refusals -----------------------------------------------------------------------------------


async def test_insufficient_funds_refuses_and_takes_nothing(uow: FakePaymentUnitOfWork) -> None:
    user, order = await funded(uow, 1499), uuid.uuid4()
    await deliver(uow, reserved(order, user, 1500))

    assert uow.wallets.balance(user) == 1499
    payment = uow.payments.rows[order]
    assert (payment.state, payment.reason, payment.charge_id) == (
        S.FAILED,
        INSUFFICIENT_FUNDS,
        None,
    )
    assert uow.ledger.of_order(order) == []
    assert announced(uow, order) == [FAILED]
    failed = uow.messages[-1]
    assert isinstance(failed, payment_events_pb2.PaymentFailed)
    assert (failed.order_id, failed.reason) == (str(order), INSUFFICIENT_FUNDS)

    # Funds that arrive later do not revive the order: a redelivery stays refused.
    await use_cases.top_up(
        uow, user_id=user, amount=Money(10, "USD"), idempotency_key="more", currency="USD"
    )
    await deliver(uow, reserved(order, user, 1500))
    assert uow.payments.state_of(order) is S.FAILED
    assert announced(uow, order) == [FAILED]
    assert_books_balance(uow)


async def test_no_wallet_is_insufficient_funds_and_opens_none(uow: FakePaymentUnitOfWork) -> None:
    user, order = uuid.uuid4(), uuid.uuid4()
    await deliver(uow, reserved(order, user, 10))
    assert uow.wallets.balance(user) is None
    assert uow.payments.rows[order].reason == INSUFFICIENT_FUNDS
    assert announced(uow, order) == [FAILED]
    assert_books_balance(uow)


async def test_another_currency_is_refused_with_its_reason(uow: FakePaymentUnitOfWork) -> None:
    user, order = await funded(uow, 5000), uuid.uuid4()
    await deliver(uow, reserved(order, user, 10, currency="EUR"))
    assert uow.wallets.balance(user) == 5000
    assert uow.payments.rows[order].reason == "wallet is kept in USD, not EUR"
    assert announced(uow, order) == [FAILED]


async def test_a_provider_decline_refuses_even_with_funds(uow: FakePaymentUnitOfWork) -> None:
    user, order = await funded(uow, 5000), uuid.uuid4()
    declining = FixedAnswers(declined=[order])
    await deliver(uow, reserved(order, user, 1500), declining)
    await deliver(uow, reserved(order, user, 1500), declining)

    assert uow.wallets.balance(user) == 5000
    payment = uow.payments.rows[order]
    assert (payment.state, payment.reason) == (S.FAILED, DECLINED_BY_PROVIDER)
    assert announced(uow, order) == [FAILED]
    failed = uow.messages[-1]
    assert isinstance(failed, payment_events_pb2.PaymentFailed)
    assert failed.reason == DECLINED_BY_PROVIDER
    assert_books_balance(uow)


def _usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency="USD")


UNREADABLE: list[Message] = [
    inventory_events_pb2.InventoryReserved(
        order_id="not-a-uuid", user_id=str(uuid.uuid4()), total=_usd(10)
    ),
    inventory_events_pb2.InventoryReserved(
        order_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()), total=_usd(0)
    ),
    inventory_events_pb2.InventoryReserved(
        order_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()), total=money_pb2.Money()
    ),
    inventory_events_pb2.InventoryReserved(order_id=str(uuid.uuid4()), user_id="", total=_usd(10)),
    order_events_pb2.OrderCancelled(order_id=""),
    order_events_pb2.OrderCancelled(order_id=str(uuid.uuid4()), user_id="someone"),
]


@pytest.mark.parametrize("message", UNREADABLE)
async def test_an_unreadable_event_raises_and_writes_nothing(
    uow: FakePaymentUnitOfWork, message: Message
) -> None:
    """Not stale but broken: raising sends it to retries and then the dead-letter topic."""
    await funded(uow, 5000)
    rows = (dict(uow.wallets.rows), dict(uow.ledger.rows), dict(uow.payments.rows))
    published, rollbacks = len(uow.published), uow.rollbacks
    with pytest.raises(InvalidArgument):
        await deliver(uow, message)
    assert (uow.wallets.rows, uow.ledger.rows, uow.payments.rows) == rows
    assert (len(uow.published), uow.rollbacks) == (published, rollbacks + 1)

"""Payment's compensation, with no database: OrderCancelled refunds a charge once, leaves
a tombstone that blocks a later charge, and any arrival order ends with the wallet whole."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace

import pytest

from shared.money import Money
from shop.events.v1 import payment_events_pb2
from tests.support.payment_events import cancelled, reserved
from tests.unit.payment.fakes import FakePaymentUnitOfWork, FixedAnswers
from tests.unit.payment.saga import (
    FAILED,
    REFUNDED,
    SUCCEEDED,
    S,
    announced,
    assert_books_balance,
    deliver,
    funded,
)

# --- compensation -------------------------------------------------------------------------------


async def test_a_cancel_after_the_charge_refunds_once(uow: FakePaymentUnitOfWork) -> None:
    user, order = await funded(uow, 5000), uuid.uuid4()
    await deliver(uow, reserved(order, user, 1500))
    await deliver(uow, cancelled(order, user, "saga timeout"))

    assert uow.wallets.balance(user) == 5000
    payment = uow.payments.rows[order]
    assert (payment.state, payment.reason) == (S.REFUNDED, "saga timeout")
    assert uow.ledger.of_order(order) == ["charge", "refund"]
    assert announced(uow, order) == [SUCCEEDED, REFUNDED]
    refunded = uow.messages[-1]
    assert isinstance(refunded, payment_events_pb2.PaymentRefunded)
    assert (refunded.order_id, refunded.amount.amount_minor) == (str(order), 1500)

    # The cancel again (redelivered, re-emitted), then a stale reservation: nothing moves.
    await deliver(uow, cancelled(order, user, "saga timeout"))
    await deliver(uow, cancelled(order, user))
    await deliver(uow, reserved(order, user, 1500))
    assert uow.wallets.balance(user) == 5000
    assert uow.payments.rows[order] == payment
    assert uow.ledger.of_order(order) == ["charge", "refund"]
    assert announced(uow, order) == [SUCCEEDED, REFUNDED]
    assert_books_balance(uow)


async def test_a_cancel_before_the_reservation_leaves_a_tombstone_that_blocks_the_charge(
    uow: FakePaymentUnitOfWork,
) -> None:
    user, order = await funded(uow, 5000), uuid.uuid4()
    await deliver(uow, cancelled(order, user, "cancelled by owner"))
    tombstone = uow.payments.rows[order]
    assert (tombstone.state, tombstone.amount, tombstone.reason) == (
        S.CANCELLED,
        None,
        "cancelled by owner",
    )
    assert announced(uow, order) == []  # a tombstone announces nothing

    await deliver(uow, reserved(order, user, 1500))
    await deliver(uow, cancelled(order, user))
    assert uow.wallets.balance(user) == 5000
    assert uow.payments.rows[order] == tombstone
    assert uow.ledger.of_order(order) == []
    assert announced(uow, order) == []
    assert_books_balance(uow)


async def test_a_cancel_before_the_reservation_of_a_user_without_a_wallet(
    uow: FakePaymentUnitOfWork,
) -> None:
    user, order = uuid.uuid4(), uuid.uuid4()
    await deliver(uow, cancelled(order, user))
    await deliver(uow, reserved(order, user, 1500))
    assert uow.payments.state_of(order) is S.CANCELLED
    assert uow.wallets.balance(user) is None
    assert announced(uow, order) == []


@pytest.mark.parametrize("failure", ["insufficient", "declined"])
async def test_a_cancel_after_a_refusal_changes_nothing(
    uow: FakePaymentUnitOfWork, failure: str
) -> None:
    user, order = await funded(uow, 100), uuid.uuid4()
    answers = FixedAnswers(declined=[order] if failure == "declined" else [])
    await deliver(uow, reserved(order, user, 1500 if failure == "insufficient" else 50), answers)
    before = uow.payments.rows[order]
    assert before.state is S.FAILED

    await deliver(uow, cancelled(order, user))
    assert uow.payments.rows[order] == before
    assert uow.wallets.balance(user) == 100
    assert uow.ledger.of_order(order) == []
    assert announced(uow, order) == [FAILED]
    assert_books_balance(uow)


# Each event twice (a redelivery), in every distinct arrival order.
ARRIVALS = sorted(set(itertools.permutations(["reserved", "reserved", "cancelled", "cancelled"])))


@pytest.mark.parametrize("arrival", ARRIVALS, ids=" > ".join)
async def test_any_arrival_order_ends_with_the_wallet_whole(
    uow: FakePaymentUnitOfWork, arrival: tuple[str, ...]
) -> None:
    """Across topics there is no order: whatever arrives first, the user gets the money back."""
    user, order = await funded(uow, 5000), uuid.uuid4()
    for name in arrival:
        event = reserved(order, user, 700) if name == "reserved" else cancelled(order, user)
        await deliver(uow, event)

    assert uow.wallets.balance(user) == 5000
    if arrival.index("reserved") < arrival.index("cancelled"):
        assert uow.payments.state_of(order) is S.REFUNDED
        assert announced(uow, order) == [SUCCEEDED, REFUNDED]
    else:
        assert uow.payments.state_of(order) is S.CANCELLED
        assert announced(uow, order) == []
    assert_books_balance(uow)


async def test_a_refund_the_wallet_cannot_take_raises_and_books_nothing(
    uow: FakePaymentUnitOfWork,
) -> None:
    """The charge came out of this wallet: if it cannot take the refund, that is a bug, and
    the event is kept (retried, then dead-lettered) instead of half-booked."""
    user, order = await funded(uow, 5000), uuid.uuid4()
    await deliver(uow, reserved(order, user, 1500))
    wallet = uow.wallets.rows[user]
    uow.wallets.rows[user] = replace(wallet, balance=Money(wallet.balance.amount_minor, "EUR"))
    with pytest.raises(RuntimeError, match="cannot take back"):
        await deliver(uow, cancelled(order, user))
    assert uow.payments.state_of(order) is S.CHARGED
    assert uow.ledger.of_order(order) == ["charge"]
    assert announced(uow, order) == [SUCCEEDED]

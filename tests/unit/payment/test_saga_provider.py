"""The provider asked before the transaction, and the subscriptions that wire it: its
answers are booked, an outage books nothing, a retried call charges once."""

from __future__ import annotations

import uuid

import pytest

from services.payment import use_cases
from services.payment.adapters import authorizer as authorizer_module
from services.payment.adapters.authorizer import AnswerNotPrepared, ProviderAuthorizer
from services.payment.adapters.provider import PaymentProviderSimulator, ProviderUnavailable
from services.payment.domain import DECLINED_BY_PROVIDER
from services.payment.subscriptions import subscriptions
from shared.messaging.envelope import Event, wrap
from shared.messaging.topics import INVENTORY, ORDERS
from shop.events.v1 import inventory_events_pb2, order_events_pb2
from tests.support.payment_events import reserved
from tests.unit.payment.fakes import FakePaymentUnitOfWork
from tests.unit.payment.saga import (
    FAILED,
    SUCCEEDED,
    S,
    announced,
    assert_books_balance,
    deliver,
    funded,
)

# --- the provider, asked before the transaction -------------------------------------------------


async def test_declines_are_the_orders_the_provider_predicts(uow: FakePaymentUnitOfWork) -> None:
    provider = PaymentProviderSimulator(latency_ms=0, failure_rate=0.5, seed=2024)
    authorizer = ProviderAuthorizer(provider)
    user = await funded(uow, 10_000)
    orders = [uuid.uuid4() for _ in range(30)]
    events = [reserved(o, user, 100) for o in orders]
    await authorizer.authorize(events)  # the consumer's preparer, before the transaction
    for event in events:
        await deliver(uow, event, authorizer)

    declined = {o for o in orders if provider.declines(o)}
    assert 0 < len(declined) < len(orders)
    for order in orders:
        payment = uow.payments.rows[order]
        expected = (S.FAILED, DECLINED_BY_PROVIDER) if order in declined else (S.CHARGED, None)
        assert (payment.state, payment.reason) == expected
    assert uow.wallets.balance(user) == 10_000 - 100 * (len(orders) - len(declined))
    assert_books_balance(uow)


async def test_a_failing_provider_that_loses_replies_still_charges_each_order_once(
    uow: FakePaymentUnitOfWork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Errors before charging and replies lost after it, each retried with the same key:
    every order ends charged once, its wallet debited once, one PaymentSucceeded."""
    monkeypatch.setattr(authorizer_module, "RETRY_PAUSE_SECONDS", 0)
    provider = PaymentProviderSimulator(latency_ms=0, seed=77, error_rate=0.3, lost_reply_rate=0.3)
    authorizer = ProviderAuthorizer(provider, attempts=30)
    user = await funded(uow, 10_000)
    orders = [uuid.UUID(int=i + 1) for i in range(20)]  # fixed, so the draws are too
    for order in orders:
        for _ in range(2):  # delivered twice, each time prepared anew
            event = reserved(order, user, 100)
            await authorizer.authorize([event])
            await deliver(uow, event, authorizer)
    assert all(provider.charges[o] == 1 for o in orders)
    assert uow.wallets.balance(user) == 10_000 - 100 * len(orders)
    assert all(announced(uow, o) == [SUCCEEDED] for o in orders)
    assert_books_balance(uow)


async def test_a_provider_outage_books_nothing_until_it_answers(uow: FakePaymentUnitOfWork) -> None:
    provider = PaymentProviderSimulator(latency_ms=0, error_rate=1.0)
    authorizer = ProviderAuthorizer(provider, attempts=2)
    user, order = await funded(uow, 5000), uuid.uuid4()
    event = reserved(order, user, 1500)
    # An outage to the consumer (a ConnectionError): the poll is read again later, not
    # dead-lettered, and the transaction never starts.
    with pytest.raises(ProviderUnavailable):
        await authorizer.authorize([event])
    assert isinstance(ProviderUnavailable(), ConnectionError)
    # Were the handler run anyway, it would not guess an answer, and would write nothing.
    with pytest.raises(AnswerNotPrepared):
        await deliver(uow, event, authorizer)
    assert uow.payments.state_of(order) is None
    assert uow.wallets.balance(user) == 5000

    provider.error_rate = 0.0
    await authorizer.authorize([event])
    await deliver(uow, event, authorizer)
    assert uow.wallets.balance(user) == 3500
    assert provider.charges[order] == 1


# --- wiring -------------------------------------------------------------------------------------

RESERVED = inventory_events_pb2.InventoryReserved.DESCRIPTOR.full_name
CANCELLED = order_events_pb2.OrderCancelled.DESCRIPTOR.full_name


def test_the_subscriptions_cover_the_events_payment_reacts_to() -> None:
    wired = subscriptions(ProviderAuthorizer(PaymentProviderSimulator(latency_ms=0)))
    assert wired.topics == [INVENTORY, ORDERS]
    assert set(wired.handlers) == {RESERVED, CANCELLED}
    assert set(wired.batch_handlers) == set()
    # The provider is asked outside the transaction, before it.
    assert set(wired.preparers) == {RESERVED}
    assert wired.row_locks is use_cases.lock_wallets


async def test_a_delivery_through_the_subscriptions_as_the_consumer_makes_it(
    uow: FakePaymentUnitOfWork,
) -> None:
    """The preparer asks the provider, then the batch's wallets are locked and the handler
    books the answer, in the transaction."""
    wired = subscriptions(
        ProviderAuthorizer(PaymentProviderSimulator(latency_ms=0, failure_rate=1.0))
    )
    user, order = await funded(uow, 5000), uuid.uuid4()
    message = reserved(order, user, 100)
    event = Event(envelope=wrap(message, str(order)), payload=message)
    lock_rows = wired.lock_rows()
    assert lock_rows is not None
    await wired.preparers[RESERVED]([event])
    async with uow:
        await lock_rows(uow, [event])
        await wired.handlers[RESERVED](uow, event)
    assert uow.wallets.locks == [[user]]
    assert uow.payments.rows[order].reason == DECLINED_BY_PROVIDER
    assert announced(uow, order) == [FAILED]

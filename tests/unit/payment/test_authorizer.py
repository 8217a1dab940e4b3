"""The provider asked outside the transaction: concurrently, bounded, retried with the
same idempotency key, and never charging an order twice."""

from __future__ import annotations

import uuid

import pytest

from services.payment.adapters.authorizer import AnswerNotPrepared, ProviderAuthorizer
from services.payment.adapters.provider import (
    PaymentProviderSimulator,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.money import Money
from shop.common.v1 import money_pb2
from shop.events.v1 import inventory_events_pb2

AMOUNT = Money(1500, "USD")


def reserved_event(order_id: uuid.UUID) -> inventory_events_pb2.InventoryReserved:
    return inventory_events_pb2.InventoryReserved(
        order_id=str(order_id),
        user_id=str(uuid.uuid4()),
        total=money_pb2.Money(amount_minor=1500, currency="USD"),
    )


async def test_a_repeated_authorisation_returns_the_first_answer_and_charges_once() -> None:
    sim = PaymentProviderSimulator(latency_ms=0, failure_rate=0.5, seed=11)
    orders = [uuid.uuid4() for _ in range(100)]
    first = [await sim.authorize(o, AMOUNT) for o in orders]
    assert [await sim.authorize(o, AMOUNT) for o in orders] == first
    charged = {o for o, d in zip(orders, first, strict=True) if d.approved}
    assert all(sim.charges[o] == (o in charged) for o in orders)


async def test_errors_and_lost_replies_are_drawn_per_attempt_and_charge_at_most_once() -> None:
    sim = PaymentProviderSimulator(latency_ms=0, seed=3, error_rate=0.3, lost_reply_rate=0.3)
    orders = [uuid.UUID(int=i + 1) for i in range(300)]
    errors = lost = 0
    for order in orders:
        for _ in range(20):  # until it answers
            try:
                assert (await sim.authorize(order, AMOUNT)).approved
                break
            except ProviderTimeout:
                lost += 1
            except ProviderUnavailable:
                errors += 1
        else:
            pytest.fail(f"order {order} never answered")
    assert errors > 30 and lost > 30
    assert set(sim.charges.values()) == {1}  # lost replies retried: still one charge each


@pytest.mark.parametrize("rate", [-0.1, 1.1, float("nan")])
def test_misbehaviour_rates_are_checked(rate: float) -> None:
    with pytest.raises(ValueError):
        PaymentProviderSimulator(error_rate=rate)
    with pytest.raises(ValueError):
        PaymentProviderSimulator(lost_reply_rate=rate)


async def test_a_batch_is_authorised_concurrently_within_the_bound() -> None:
    sim = PaymentProviderSimulator(latency_ms=50)
    authorizer = ProviderAuthorizer(sim, concurrency=8)
    orders = [uuid.uuid4() for _ in range(40)]
    await authorizer.authorize([reserved_event(o) for o in orders])
    assert sim.max_in_flight == 8
    assert all(authorizer.answer_for(o).approved for o in orders)
    with pytest.raises(AnswerNotPrepared):  # never asked: the handler must not guess
        authorizer.answer_for(uuid.uuid4())


async def test_a_slow_provider_times_out_and_is_asked_again_with_the_same_key() -> None:
    sim = PaymentProviderSimulator(latency_ms=300)
    authorizer = ProviderAuthorizer(sim, timeout=0.05, attempts=2)
    order = uuid.uuid4()
    with pytest.raises(ProviderTimeout):
        await authorizer.authorize([reserved_event(order)])
    # An outage, as the consumer sees it: the batch is read again later, never dead-lettered.
    assert issubclass(ProviderTimeout, ConnectionError)
    sim.latency_ms = 0
    await authorizer.authorize([reserved_event(order)])
    assert authorizer.answer_for(order).approved
    assert sim.charges[order] == 1


async def test_lost_replies_are_retried_into_the_recorded_answer() -> None:
    sim = PaymentProviderSimulator(latency_ms=0, seed=5, lost_reply_rate=0.5)
    authorizer = ProviderAuthorizer(sim, attempts=10)
    orders = [uuid.UUID(int=i + 1) for i in range(50)]  # fixed, so the draws are too
    await authorizer.authorize([reserved_event(o) for o in orders])
    assert all(authorizer.answer_for(o).approved for o in orders)
    assert all(sim.charges[o] == 1 for o in orders)

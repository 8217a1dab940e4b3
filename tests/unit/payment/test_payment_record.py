"""Payment's saga rules without I/O: the payment state machine and the provider simulator."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from services.payment.authorizer import ProviderAuthorizer
from services.payment.domain import (
    DECLINED_BY_PROVIDER,
    INSUFFICIENT_FUNDS,
    MAX_REASON,
    EntryKind,
    IllegalTransition,
    OnCancel,
    Payment,
    PaymentState,
    Wallet,
    can_move,
    charge_entry,
    debit_refusal,
    on_cancel,
    refund_entry,
)
from services.payment.event_handlers import subscriptions
from services.payment.provider import PaymentProviderSimulator, ProviderDecision
from services.payment.settings import PaymentSettings
from shared.messaging.envelope import EVENT_TYPES
from shared.messaging.topics import INVENTORY, ORDERS
from shared.money import Money
from shop.events.v1 import inventory_events_pb2, order_events_pb2

ORDER, USER = uuid.uuid4(), uuid.uuid4()
AMOUNT = Money(1500, "USD")
S = PaymentState


def pending() -> Payment:
    return Payment.claim(order_id=ORDER, user_id=USER, amount=AMOUNT)


def charged() -> Payment:
    return pending().charged(uuid.uuid4())


def in_state(state: PaymentState) -> Payment:
    return {
        S.PENDING: pending,
        S.CHARGED: charged,
        S.FAILED: lambda: pending().failed(INSUFFICIENT_FUNDS),
        S.REFUNDED: lambda: charged().refunded(uuid.uuid4(), "changed my mind"),
        S.CANCELLED: lambda: Payment.tombstone(order_id=ORDER, user_id=USER, reason="timeout"),
    }[state]()


# --- the state machine --------------------------------------------------------------------------

LEGAL = {(S.PENDING, S.CHARGED), (S.PENDING, S.FAILED), (S.CHARGED, S.REFUNDED)}
MOVES: dict[PaymentState, Callable[[Payment], Payment]] = {
    S.CHARGED: lambda p: p.charged(uuid.uuid4()),
    S.FAILED: lambda p: p.failed("declined by provider"),
    S.REFUNDED: lambda p: p.refunded(uuid.uuid4(), "cancelled"),
}
ALL_MOVES = [(source, target) for source in S for target in MOVES]


def test_every_state_is_reachable_as_built() -> None:
    assert {s: in_state(s).state for s in S} == {s: s for s in S}


@pytest.mark.parametrize(("source", "target"), sorted(LEGAL))
def test_legal_transitions(source: PaymentState, target: PaymentState) -> None:
    before = in_state(source)
    after = MOVES[target](before)
    assert after.state is target
    assert can_move(source, target)
    assert (after.order_id, after.user_id, after.amount) == (ORDER, USER, AMOUNT)
    assert after.updated_at >= before.updated_at
    assert before.state is source  # records are values: the old one is unchanged


@pytest.mark.parametrize(("source", "target"), [m for m in ALL_MOVES if m not in LEGAL])
def test_illegal_transitions_are_refused(source: PaymentState, target: PaymentState) -> None:
    assert not can_move(source, target)
    with pytest.raises(IllegalTransition):
        MOVES[target](in_state(source))


@pytest.mark.parametrize("target", list(S))
def test_nothing_moves_back_to_pending_or_to_a_tombstone(target: PaymentState) -> None:
    assert not can_move(target, S.PENDING)
    assert not can_move(target, S.CANCELLED)


def test_terminal_states() -> None:
    terminal = {s for s in S if not any(can_move(s, t) for t in S)}
    assert terminal == {S.FAILED, S.REFUNDED, S.CANCELLED}


def test_claim_is_pending_and_unbooked() -> None:
    claim = pending()
    assert claim.state is S.PENDING
    assert (claim.charge_id, claim.refund_id, claim.reason) == (None, None, None)


def test_charge_records_the_ledger_entry() -> None:
    charge_id = uuid.uuid4()
    assert pending().charged(charge_id).charge_id == charge_id


def test_refund_keeps_the_charge_and_records_the_refund() -> None:
    before = charged()
    refund_id = uuid.uuid4()
    after = before.refunded(refund_id, "saga timeout")
    assert (after.charge_id, after.refund_id, after.reason) == (
        before.charge_id,
        refund_id,
        "saga timeout",
    )


def test_tombstone_has_no_amount_and_keeps_the_reason() -> None:
    tombstone = Payment.tombstone(order_id=ORDER, user_id=USER, reason="  cancelled by owner ")
    assert tombstone.state is S.CANCELLED
    assert tombstone.amount is None
    assert tombstone.reason == "cancelled by owner"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("", None),
        ("   ", None),
        ("x" * (MAX_REASON + 10), "x" * MAX_REASON),
    ],
)
def test_reasons_are_trimmed_and_bounded(given: str, kept: str | None) -> None:
    assert Payment.tombstone(order_id=ORDER, user_id=USER, reason=given).reason == kept


def test_a_failure_always_says_why() -> None:
    assert pending().failed("").reason == "unknown"
    assert pending().failed(DECLINED_BY_PROVIDER).reason == DECLINED_BY_PROVIDER


# --- what OrderCancelled does to an existing record ---------------------------------------------


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (S.CHARGED, OnCancel.REFUND),
        (S.FAILED, OnCancel.NOTHING),
        (S.REFUNDED, OnCancel.NOTHING),
        (S.CANCELLED, OnCancel.NOTHING),
    ],
)
def test_on_cancel(state: PaymentState, action: OnCancel) -> None:
    assert on_cancel(in_state(state)) is action


def test_on_cancel_of_an_unsettled_claim_is_a_bug() -> None:
    with pytest.raises(IllegalTransition):
        on_cancel(pending())


# --- ledger entries of the saga -----------------------------------------------------------------


def test_charge_and_refund_entries_are_keyed_by_the_order() -> None:
    charge = charge_entry(pending())
    refund = refund_entry(charged())
    assert (charge.kind, refund.kind) == (EntryKind.CHARGE, EntryKind.REFUND)
    for entry in (charge, refund):
        assert (entry.order_id, entry.user_id, entry.amount) == (ORDER, USER, AMOUNT)
        assert entry.idempotency_key is None
    assert charge.entry_id != refund.entry_id


@pytest.mark.parametrize("state", [s for s in S if s is not S.PENDING])
def test_only_a_pending_payment_is_charged(state: PaymentState) -> None:
    with pytest.raises(IllegalTransition):
        charge_entry(in_state(state))


@pytest.mark.parametrize("state", [s for s in S if s is not S.CHARGED])
def test_only_a_charged_payment_is_refunded(state: PaymentState) -> None:
    with pytest.raises(IllegalTransition):
        refund_entry(in_state(state))


def test_debit_refusal_reasons() -> None:
    rich = Wallet(USER, Money(10**6, "USD"), None)
    poor = Wallet(USER, Money(1, "USD"), None)
    euro = Wallet(USER, Money(10**6, "EUR"), None)
    assert debit_refusal(None, AMOUNT) == INSUFFICIENT_FUNDS
    assert debit_refusal(poor, AMOUNT) == INSUFFICIENT_FUNDS
    assert debit_refusal(rich, AMOUNT) == INSUFFICIENT_FUNDS  # a race took it meanwhile
    assert debit_refusal(euro, AMOUNT) == "wallet is kept in EUR, not USD"


# --- the provider simulator ---------------------------------------------------------------------

IDS = [uuid.UUID(int=i * 7919 + 1) for i in range(2000)]


def provider(
    rate: float, seed: int | None = None, latency_ms: float = 0
) -> PaymentProviderSimulator:
    return PaymentProviderSimulator(latency_ms=latency_ms, failure_rate=rate, seed=seed)


def test_draws_are_in_the_unit_interval_and_repeatable() -> None:
    sim = provider(0.3, seed=42)
    draws = [sim.draw(i) for i in IDS]
    assert all(0 <= d < 1 for d in draws)
    assert draws == [provider(0.9, seed=42).draw(i) for i in IDS]  # the rate does not move them
    assert len(set(draws)) == len(IDS)


def test_the_seed_changes_which_orders_are_declined() -> None:
    unseeded, seeded = provider(0.5), provider(0.5, seed=1)
    assert [unseeded.declines(i) for i in IDS] != [seeded.declines(i) for i in IDS]
    assert [seeded.declines(i) for i in IDS] == [provider(0.5, seed=1).declines(i) for i in IDS]


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_the_failure_rate_is_the_share_declined(rate: float) -> None:
    sim = provider(rate, seed=3)
    share = sum(sim.declines(i) for i in IDS) / len(IDS)
    assert abs(share - rate) < 0.05


def test_a_higher_rate_declines_a_superset() -> None:
    low, high = provider(0.2, seed=9), provider(0.6, seed=9)
    assert {i for i in IDS if low.declines(i)} <= {i for i in IDS if high.declines(i)}


async def test_rate_zero_approves_and_rate_one_declines_everything() -> None:
    for order_id in IDS[:50]:
        assert await provider(0.0).authorize(order_id, AMOUNT) == ProviderDecision(True)
        assert await provider(1.0).authorize(order_id, AMOUNT) == ProviderDecision(
            False, DECLINED_BY_PROVIDER
        )


async def test_redelivery_gets_the_same_answer() -> None:
    sim = provider(0.5, seed=5)
    for order_id in IDS[:200]:
        first = await sim.authorize(order_id, AMOUNT)
        assert await sim.authorize(order_id, Money(1, "USD")) == first
        assert first.approved is not sim.declines(order_id)


async def test_latency_is_applied() -> None:
    started = time.monotonic()
    await provider(0.0, latency_ms=50).authorize(ORDER, AMOUNT)
    assert time.monotonic() - started >= 0.045


@pytest.mark.parametrize(
    ("latency_ms", "rate"),
    [
        (-1, 0.0),
        (float("nan"), 0.0),
        (float("inf"), 0.0),
        (0, -0.01),
        (0, 1.01),
        (0, float("nan")),
    ],
)
def test_simulator_refuses_bad_settings(latency_ms: float, rate: float) -> None:
    with pytest.raises(ValueError):
        PaymentProviderSimulator(latency_ms=latency_ms, failure_rate=rate)


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LATENCY_MS", "FAILURE_RATE", "SEED"):
        monkeypatch.delenv(f"SHOP_PAYMENT_PROVIDER_{name}", raising=False)
    settings = PaymentSettings()
    assert (settings.provider_latency_ms, settings.provider_failure_rate) == (2.0, 0.0)
    assert settings.provider_seed is None


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_PAYMENT_PROVIDER_LATENCY_MS", "15")
    monkeypatch.setenv("SHOP_PAYMENT_PROVIDER_FAILURE_RATE", "0.25")
    monkeypatch.setenv("SHOP_PAYMENT_PROVIDER_SEED", "7")
    sim = PaymentProviderSimulator.from_settings(PaymentSettings())
    assert (sim.latency_ms, sim.failure_rate, sim.seed) == (15.0, 0.25, 7)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SHOP_PAYMENT_PROVIDER_LATENCY_MS", "-1"),
        ("SHOP_PAYMENT_PROVIDER_LATENCY_MS", "inf"),
        ("SHOP_PAYMENT_PROVIDER_LATENCY_MS", "soon"),
        ("SHOP_PAYMENT_PROVIDER_FAILURE_RATE", "-0.1"),
        ("SHOP_PAYMENT_PROVIDER_FAILURE_RATE", "1.5"),
        ("SHOP_PAYMENT_PROVIDER_FAILURE_RATE", "nan"),
    ],
)
def test_settings_refuse_bad_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        PaymentSettings()


# --- wiring -------------------------------------------------------------------------------------


def test_subscriptions_cover_the_events_payment_reacts_to() -> None:
    wired = subscriptions(ProviderAuthorizer(provider(0.0)))
    assert list(wired.topics) == [INVENTORY, ORDERS]
    assert set(wired.handlers) == {
        inventory_events_pb2.InventoryReserved.DESCRIPTOR.full_name,
        order_events_pb2.OrderCancelled.DESCRIPTOR.full_name,
    }
    assert all(name in EVENT_TYPES for name in wired.handlers)
    # The provider is asked outside the transaction, before it.
    assert set(wired.preparers) == {inventory_events_pb2.InventoryReserved.DESCRIPTOR.full_name}

"""The payment record without I/O: its state machine, its ledger entries, and the events
its settlements announce."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from services.payment.domain import (
    DECLINED_BY_PROVIDER,
    INSUFFICIENT_FUNDS,
    MAX_REASON,
    ChargeRefunded,
    ChargeRefused,
    EntryKind,
    IllegalTransition,
    OnCancel,
    OrderCharged,
    Payment,
    PaymentState,
    Wallet,
    can_move,
    charge_entry,
    debit_refusal,
    on_cancel,
    refund_entry,
    settle_charge,
    settle_refund,
    settle_refusal,
)
from shared.money import Money

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


# --- settlements: the record's next state, its ledger entry, the event ---------------------------


def test_a_charge_books_its_entry_and_announces_it() -> None:
    charged, entry, event = settle_charge(pending())
    assert (charged.state, charged.charge_id) == (S.CHARGED, entry.entry_id)
    assert (entry.kind, entry.order_id, entry.amount) == (EntryKind.CHARGE, ORDER, AMOUNT)
    assert event == OrderCharged(ORDER, entry.entry_id, AMOUNT)


def test_a_refusal_books_nothing_and_says_why() -> None:
    failed, event = settle_refusal(pending(), f"  {INSUFFICIENT_FUNDS} ")
    assert (failed.state, failed.reason) == (S.FAILED, INSUFFICIENT_FUNDS)
    assert event == ChargeRefused(ORDER, INSUFFICIENT_FUNDS)
    assert settle_refusal(pending(), "")[1] == ChargeRefused(ORDER, "unknown")


def test_a_refund_books_its_entry_and_announces_the_amount() -> None:
    before = charged()
    refunded, entry, event = settle_refund(before, "saga timeout")
    assert (refunded.state, refunded.refund_id, refunded.charge_id) == (
        S.REFUNDED,
        entry.entry_id,
        before.charge_id,
    )
    assert (entry.kind, entry.order_id, entry.amount) == (EntryKind.REFUND, ORDER, AMOUNT)
    assert event == ChargeRefunded(ORDER, AMOUNT)


@pytest.mark.parametrize("state", [s for s in S if s is not S.PENDING])
def test_only_a_pending_payment_is_settled(state: PaymentState) -> None:
    with pytest.raises(IllegalTransition):
        settle_charge(in_state(state))
    with pytest.raises(IllegalTransition):
        settle_refusal(in_state(state), "no")


@pytest.mark.parametrize("state", [s for s in S if s is not S.CHARGED])
def test_only_a_charge_is_refunded(state: PaymentState) -> None:
    with pytest.raises(IllegalTransition):
        settle_refund(in_state(state), "no")

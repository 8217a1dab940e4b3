"""The reservation state machine and the saga's line rules, without I/O."""

from __future__ import annotations

import itertools

import pytest

from services.inventory.domain import (
    MAX_AVAILABLE,
    MAX_LINES,
    MAX_REASON,
    REACTIONS,
    TRANSITIONS,
    IllegalTransition,
    Line,
    ReservationState,
    Step,
    StockMove,
    Trigger,
    check_transition,
    first_fit,
    first_short,
    react,
    rejection_reason,
    release_reason,
    requested_lines,
    source_states,
)
from shared.errors import FailedPrecondition, InvalidArgument

S = ReservationState
NONE = None  # no reservation yet
ALL_STATES: list[ReservationState | None] = [NONE, *ReservationState]

LEGAL = {
    (NONE, S.RESERVED),
    (NONE, S.REJECTED),
    (NONE, S.CANCELLED),
    (S.RESERVED, S.COMMITTED),
    (S.RESERVED, S.RELEASED),
    (S.COMMITTED, S.RELEASED),
}


# --- transitions --------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "to"), sorted(LEGAL, key=str))
def test_legal_transitions_pass(current: ReservationState | None, to: ReservationState) -> None:
    check_transition(current, to)


@pytest.mark.parametrize(
    ("current", "to"),
    [pair for pair in itertools.product(ALL_STATES, ReservationState) if pair not in LEGAL],
    ids=str,
)
def test_every_other_transition_is_illegal(
    current: ReservationState | None, to: ReservationState
) -> None:
    with pytest.raises(IllegalTransition) as error:
        check_transition(current, to)
    assert isinstance(error.value, FailedPrecondition)
    assert str(to) in error.value.message


def test_the_table_is_exactly_the_legal_set() -> None:
    assert {(s, t) for s, targets in TRANSITIONS.items() for t in targets} == LEGAL
    assert set(TRANSITIONS) == set(ALL_STATES)


@pytest.mark.parametrize("final", [S.RELEASED, S.REJECTED, S.CANCELLED])
def test_ended_reservations_never_move_again(final: ReservationState) -> None:
    assert TRANSITIONS[final] == frozenset()


# --- what each event does in each state ---------------------------------------------------------

EXPECTED: dict[tuple[Trigger, ReservationState | None], Step | None] = {
    **{(t, s): None for t in Trigger for s in ALL_STATES},
    (Trigger.ORDER_CREATED, NONE): Step(S.RESERVED, StockMove.HOLD, if_short=S.REJECTED),
    (Trigger.PAYMENT_SUCCEEDED, S.RESERVED): Step(S.COMMITTED, StockMove.COMMIT),
    (Trigger.PAYMENT_FAILED, S.RESERVED): Step(S.RELEASED, StockMove.RELEASE),
    (Trigger.ORDER_CANCELLED, NONE): Step(S.CANCELLED, StockMove.NONE),
    (Trigger.ORDER_CANCELLED, S.RESERVED): Step(S.RELEASED, StockMove.RELEASE),
    (Trigger.ORDER_CANCELLED, S.COMMITTED): Step(S.RELEASED, StockMove.UNSELL),
}


@pytest.mark.parametrize(("trigger", "state"), list(EXPECTED), ids=str)
def test_reaction_of_every_state_to_every_event(
    trigger: Trigger, state: ReservationState | None
) -> None:
    assert react(state, trigger) == EXPECTED[(trigger, state)]


def test_every_reaction_is_a_legal_transition() -> None:
    for reactions in REACTIONS.values():
        for state, step in reactions.items():
            check_transition(state, step.to)
            if step.if_short is not None:
                assert step.move is StockMove.HOLD
                check_transition(state, step.if_short)


def test_order_created_does_something_only_before_a_reservation_exists() -> None:
    # The handler relies on this: a lost claim is ignored without reading its state.
    assert source_states(Trigger.ORDER_CREATED) == {NONE}


@pytest.mark.parametrize("trigger", [Trigger.PAYMENT_SUCCEEDED, Trigger.PAYMENT_FAILED])
def test_payments_do_something_only_to_a_reserved_reservation(trigger: Trigger) -> None:
    # The handler relies on this: one compare-and-set from RESERVED decides.
    assert source_states(trigger) == {S.RESERVED}


def test_cancel_acts_on_no_reservation_reserved_and_committed() -> None:
    assert source_states(Trigger.ORDER_CANCELLED) == {NONE, S.RESERVED, S.COMMITTED}


@pytest.mark.parametrize("move", list(StockMove))
def test_every_stock_move_keeps_the_ledger_balanced(move: StockMove) -> None:
    assert move.available + move.reserved + move.sold == 0


def test_stock_moves_are_what_their_names_say() -> None:
    assert (StockMove.HOLD.available, StockMove.HOLD.reserved, StockMove.HOLD.sold) == (-1, 1, 0)
    assert (StockMove.COMMIT.reserved, StockMove.COMMIT.sold) == (-1, 1)
    assert (StockMove.RELEASE.available, StockMove.RELEASE.reserved) == (1, -1)
    assert (StockMove.UNSELL.available, StockMove.UNSELL.sold) == (1, -1)


def test_a_full_saga_then_a_cancel_walks_the_machine() -> None:
    state: ReservationState | None = NONE
    for trigger in (Trigger.ORDER_CREATED, Trigger.PAYMENT_SUCCEEDED, Trigger.ORDER_CANCELLED):
        step = react(state, trigger)
        assert step is not None
        state = step.to
    assert state is S.RELEASED
    assert all(react(state, t) is None for t in Trigger)


# --- lines --------------------------------------------------------------------------------------


def test_lines_are_merged_per_sku_and_sorted() -> None:
    assert requested_lines([("CC", 1), ("AA", 2), ("BB", 3), ("AA", 4)]) == (
        Line("AA", 6),
        Line("BB", 3),
        Line("CC", 1),
    )


def test_a_full_order_of_lines_is_accepted() -> None:
    lines = requested_lines([(f"SKU-{i:03}", 1) for i in range(MAX_LINES)])
    assert len(lines) == MAX_LINES


@pytest.mark.parametrize(
    ("lines", "field"),
    [
        ([], "lines"),
        ([(f"SKU-{i}", 1) for i in range(MAX_LINES + 1)], "lines"),
        ([("AA", 1), ("bad sku", 1)], "lines[1].sku"),
        ([("", 1)], "lines[0].sku"),
        ([("AA", 0)], "lines[0].quantity"),
        ([("AA", 1), ("BB", -1)], "lines[1].quantity"),
        ([("AA", MAX_AVAILABLE + 1)], "lines[0].quantity"),
        ([("AA", MAX_AVAILABLE), ("AA", 1)], "lines[sku=AA].quantity"),
    ],
)
def test_malformed_lines_are_rejected_naming_the_field(
    lines: list[tuple[str, int]], field: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        requested_lines(lines)
    assert error.value.field == field


@pytest.mark.parametrize(
    ("held", "short"),
    [({"AA", "BB", "CC"}, None), ({"AA", "CC"}, "BB"), (set(), "AA"), ({"BB"}, "AA")],
)
def test_first_short_is_in_line_order(held: set[str], short: str | None) -> None:
    lines = (Line("AA", 1), Line("BB", 1), Line("CC", 1))
    assert first_short(lines, held) == short


def test_reasons() -> None:
    assert rejection_reason("SKU-1") == "out of stock: SKU-1"
    assert release_reason("  saga timeout ") == "saga timeout"
    assert release_reason("   ") == "order cancelled"
    assert release_reason("x" * (MAX_REASON + 10)) == "x" * MAX_REASON


@pytest.mark.parametrize(
    ("available", "asks", "held"),
    [
        (5, [3, 3, 2, 1], [True, False, True, False]),
        (0, [1, 1], [False, False]),
        (2, [1, 1, 1], [True, True, False]),
        (10, [], []),
        (3, [4, 1, 2], [False, True, True]),
    ],
)
def test_first_fit_matches_one_conditional_update_per_request(
    available: int, asks: list[int], held: list[bool]
) -> None:
    assert first_fit(available, asks) == held

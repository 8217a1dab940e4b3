"""The circuit breaker's state machine on a fake clock: nothing sleeps, nothing is timed."""

from __future__ import annotations

import logging

import grpc
import pytest

from shared.config.models import BreakerPolicy
from shared.rpc.breaker import CircuitBreaker, Outcome, State, Ticket, outcome_of

POLICY = BreakerPolicy(failure_threshold=3, open_seconds=5.0, half_open_trials=2)
C = grpc.StatusCode


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admitted(breaker: CircuitBreaker, policy: BreakerPolicy = POLICY) -> Ticket:
    ticket = breaker.allow(policy)
    assert ticket is not None, f"refused while {breaker.state(policy).value}"
    return ticket


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.record(admitted(breaker), Outcome.FAILURE, POLICY)


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.record(admitted(breaker), Outcome.SUCCESS, POLICY)


def opened(clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker("product", clock)
    fail(breaker, POLICY.failure_threshold)
    assert breaker.state(POLICY) is State.OPEN
    return breaker


def test_only_unavailable_and_deadline_exceeded_are_failures() -> None:
    assert outcome_of(C.UNAVAILABLE) is Outcome.FAILURE
    assert outcome_of(C.DEADLINE_EXCEEDED) is Outcome.FAILURE
    for answered in (
        C.OK,
        C.INVALID_ARGUMENT,
        C.PERMISSION_DENIED,
        C.FAILED_PRECONDITION,
        C.NOT_FOUND,
        C.UNAUTHENTICATED,
        C.RESOURCE_EXHAUSTED,
        C.INTERNAL,
    ):
        assert outcome_of(answered) is Outcome.SUCCESS, answered
    assert outcome_of(C.CANCELLED) is Outcome.NEUTRAL


def test_it_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker = CircuitBreaker("product", Clock())
    fail(breaker, POLICY.failure_threshold - 1)
    assert breaker.state(POLICY) is State.CLOSED
    fail(breaker)
    assert breaker.state(POLICY) is State.OPEN
    assert breaker.allow(POLICY) is None


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = CircuitBreaker("product", Clock())
    for _ in range(5):
        fail(breaker, POLICY.failure_threshold - 1)
        succeed(breaker)
    assert breaker.state(POLICY) is State.CLOSED


def test_caller_errors_do_not_open_it() -> None:
    breaker = CircuitBreaker("product", Clock())
    for _ in range(10):
        breaker.record(admitted(breaker), outcome_of(C.INVALID_ARGUMENT), POLICY)
    assert breaker.state(POLICY) is State.CLOSED


def test_open_refuses_until_open_seconds_then_half_open() -> None:
    clock = Clock()
    breaker = opened(clock)
    assert breaker.retry_in(POLICY) == pytest.approx(5.0)
    clock.now += 4.9
    assert breaker.allow(POLICY) is None
    assert breaker.retry_in(POLICY) == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.state(POLICY) is State.HALF_OPEN
    assert breaker.retry_in(POLICY) == 0.0


def test_half_open_lets_through_only_the_trial_calls() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += POLICY.open_seconds
    trials = [admitted(breaker) for _ in range(POLICY.half_open_trials)]
    assert all(t.trial for t in trials)
    assert breaker.allow(POLICY) is None  # the bound: no more while they are out
    assert breaker.state(POLICY) is State.HALF_OPEN


def test_all_trials_succeeding_close_it() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += POLICY.open_seconds
    first, second = admitted(breaker), admitted(breaker)
    breaker.record(first, Outcome.SUCCESS, POLICY)
    assert breaker.state(POLICY) is State.HALF_OPEN  # one success is not enough
    breaker.record(second, Outcome.SUCCESS, POLICY)
    assert breaker.state(POLICY) is State.CLOSED
    # Closed from scratch: it takes the whole threshold again to open it.
    fail(breaker, POLICY.failure_threshold - 1)
    assert breaker.state(POLICY) is State.CLOSED


def test_one_failure_in_half_open_reopens_it_for_open_seconds() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += POLICY.open_seconds
    first, second = admitted(breaker), admitted(breaker)
    breaker.record(first, Outcome.SUCCESS, POLICY)
    breaker.record(second, Outcome.FAILURE, POLICY)
    assert breaker.state(POLICY) is State.OPEN
    assert breaker.retry_in(POLICY) == pytest.approx(POLICY.open_seconds)
    clock.now += POLICY.open_seconds
    assert breaker.state(POLICY) is State.HALF_OPEN


def test_a_neutral_trial_hands_its_slot_back() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += POLICY.open_seconds
    first, second = admitted(breaker), admitted(breaker)
    breaker.record(first, Outcome.NEUTRAL, POLICY)  # e.g. the caller was cancelled
    third = admitted(breaker)
    assert breaker.allow(POLICY) is None
    breaker.record(second, Outcome.SUCCESS, POLICY)
    breaker.record(third, Outcome.SUCCESS, POLICY)
    assert breaker.state(POLICY) is State.CLOSED


def test_an_outcome_from_an_earlier_state_is_ignored() -> None:
    clock = Clock()
    breaker = CircuitBreaker("product", clock)
    slow = admitted(breaker)  # a call in flight while the others fail
    fail(breaker, POLICY.failure_threshold)
    clock.now += POLICY.open_seconds
    assert breaker.state(POLICY) is State.HALF_OPEN
    # It answers now, but it tested the service before the breaker opened.
    breaker.record(slow, Outcome.SUCCESS, POLICY)
    breaker.record(slow, Outcome.SUCCESS, POLICY)
    assert breaker.state(POLICY) is State.HALF_OPEN
    # Nor does a late failure from before reopen it.
    breaker.record(slow, Outcome.FAILURE, POLICY)
    assert breaker.state(POLICY) is State.HALF_OPEN


def test_failures_past_the_threshold_of_calls_already_admitted_do_not_reopen() -> None:
    clock = Clock()
    breaker = CircuitBreaker("product", clock)
    tickets = [admitted(breaker) for _ in range(POLICY.failure_threshold + 3)]
    for ticket in tickets:
        breaker.record(ticket, Outcome.FAILURE, POLICY)
    assert breaker.transitions[(State.CLOSED, State.OPEN)] == 1
    assert breaker.retry_in(POLICY) == pytest.approx(POLICY.open_seconds)


def test_the_policy_is_read_on_every_call() -> None:
    clock = Clock()
    breaker = CircuitBreaker("product", clock)
    strict = BreakerPolicy(failure_threshold=1, open_seconds=1.0, half_open_trials=1)
    fail(breaker, 1)  # under POLICY: not yet
    assert breaker.state(POLICY) is State.CLOSED
    breaker.record(admitted(breaker, strict), Outcome.FAILURE, strict)
    assert breaker.state(strict) is State.OPEN
    clock.now += 1.0
    assert breaker.state(POLICY) is State.OPEN  # POLICY keeps it open for 5 s
    assert breaker.state(strict) is State.HALF_OPEN


def test_every_transition_is_counted_logged_and_heard(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    heard: list[tuple[str, State, State]] = []
    breaker = CircuitBreaker("product", clock)
    breaker.listeners.append(lambda name, was, now: heard.append((name, was, now)))
    with caplog.at_level(logging.INFO, logger="shared.rpc.breaker"):
        fail(breaker, POLICY.failure_threshold)
        clock.now += POLICY.open_seconds
        fail(breaker)  # the first trial fails: open again
        clock.now += POLICY.open_seconds
        succeed(breaker, POLICY.half_open_trials)
    assert breaker.state(POLICY) is State.CLOSED
    assert dict(breaker.transitions) == {
        (State.CLOSED, State.OPEN): 1,
        (State.OPEN, State.HALF_OPEN): 2,
        (State.HALF_OPEN, State.OPEN): 1,
        (State.HALF_OPEN, State.CLOSED): 1,
    }
    assert [(was.value, now.value) for _, was, now in heard] == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert "circuit for product: closed -> open" in messages
    assert "circuit for product: half-open -> closed" in messages
    opened_records = [r for r in caplog.records if r.getMessage().endswith("-> open")]
    assert all(r.levelno == logging.WARNING for r in opened_records)


def test_a_failing_listener_does_not_break_the_breaker() -> None:
    breaker = CircuitBreaker("product", Clock())

    def broken(name: str, was: State, now: State) -> None:
        raise RuntimeError("metrics down")

    breaker.listeners.append(broken)
    fail(breaker, POLICY.failure_threshold)
    assert breaker.state(POLICY) is State.OPEN

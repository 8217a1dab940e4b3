"""A circuit breaker per target service: stop calling a service that keeps failing.

A pure state machine (no I/O, no sleeping; the clock is injected), driven by
``ServiceClients.call`` once per attempt:

- **closed**: every call goes through; ``failure_threshold`` consecutive failures
  (UNAVAILABLE, DEADLINE_EXCEEDED) open it. Any other answer, even an error such as
  INVALID_ARGUMENT, proves the service is up and resets the count.
- **open**: no call goes through, for ``open_seconds``; the caller fails at once
  instead of waiting out a deadline on a service that is not answering.
- **half-open**: at most ``half_open_trials`` trial calls go through (the rest are
  refused as if open); all must succeed to close it, one failure opens it again.

The thresholds are a ``BreakerPolicy`` handed to every method, so a config change
applies to the next call. Each ``allow`` returns a ``Ticket`` naming the state's
epoch (bumped on every transition): an outcome that arrives after the state it was
admitted in has ended (a slow call admitted while closed, answering after the breaker
opened) is ignored, so it cannot close a breaker it never tested.

Every transition is logged and counted in ``transitions`` (from, to), for metrics.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from shared.config.models import BreakerPolicy

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# What says "this service is not answering"; anything else is an answer.
FAILURE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    # Says nothing about the service (the caller gave up, no instance was picked):
    # a trial slot it held is handed back.
    NEUTRAL = "neutral"


def outcome_of(code: grpc.StatusCode) -> Outcome:
    if code in FAILURE_CODES:
        return Outcome.FAILURE
    if code == grpc.StatusCode.CANCELLED:  # our side gave up: no news of the service
        return Outcome.NEUTRAL
    return Outcome.SUCCESS


@dataclass(frozen=True, slots=True)
class Ticket:
    """Leave to make one call; hand it back with the call's outcome."""

    epoch: int
    trial: bool = False


Listener = Callable[[str, State, State], None]


class CircuitBreaker:
    def __init__(self, name: str, clock: Clock = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._state = State.CLOSED
        self._epoch = 0
        self._failures = 0  # consecutive, while closed
        self._opened_at = 0.0
        self._trials = 0  # admitted in this half-open epoch, outcome pending or success
        self._trial_successes = 0
        self.transitions: Counter[tuple[State, State]] = Counter()
        self.listeners: list[Listener] = []

    def state(self, policy: BreakerPolicy) -> State:
        """The state now: an open breaker whose time is up is half-open."""
        if self._state is State.OPEN and self._clock() >= self._opened_at + policy.open_seconds:
            self._move(State.HALF_OPEN)
        return self._state

    def retry_in(self, policy: BreakerPolicy) -> float:
        """Seconds until an open breaker lets trial calls through (0 when not open)."""
        if self.state(policy) is not State.OPEN:
            return 0.0
        return max(0.0, self._opened_at + policy.open_seconds - self._clock())

    def allow(self, policy: BreakerPolicy) -> Ticket | None:
        """A ticket if a call may go through now; None if it must fail at once."""
        state = self.state(policy)
        if state is State.CLOSED:
            return Ticket(self._epoch)
        if state is State.HALF_OPEN and self._trials < policy.half_open_trials:
            self._trials += 1
            return Ticket(self._epoch, trial=True)
        return None

    def record(self, ticket: Ticket, outcome: Outcome, policy: BreakerPolicy) -> None:
        if ticket.epoch != self._epoch:
            return  # admitted in a state that has ended since: it tested nothing now
        if self._state is State.CLOSED:
            if outcome is Outcome.SUCCESS:
                self._failures = 0
            elif outcome is Outcome.FAILURE:
                self._failures += 1
                if self._failures >= policy.failure_threshold:
                    self._open()
        elif self._state is State.HALF_OPEN and ticket.trial:
            if outcome is Outcome.FAILURE:
                self._open()
            elif outcome is Outcome.SUCCESS:
                self._trial_successes += 1
                if self._trial_successes >= policy.half_open_trials:
                    self._move(State.CLOSED)
            else:
                self._trials -= 1  # the slot goes to the next caller

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move(State.OPEN)

    def _move(self, to: State) -> None:
        was = self._state
        self._state = to
        self._epoch += 1
        self._failures = 0
        self._trials = 0
        self._trial_successes = 0
        self.transitions[(was, to)] += 1
        level = logging.WARNING if to is State.OPEN else logging.INFO
        log.log(level, "circuit for %s: %s -> %s", self.name, was.value, to.value)
        for listener in list(self.listeners):
            try:
                listener(self.name, was, to)
            except Exception:  # a metrics hook must never break a call
                log.exception("circuit listener %r failed", listener)

"""Deadline budgets: an outbound call never outlives the call that caused it.

The server chain's ``DeadlineInterceptor`` (shared/rpc/interceptors/deadline.py) records the
incoming call's deadline in a context variable, as a point on the monotonic clock;
each RPC runs in its own task, so the variable is that call's alone. Every outbound
call (``ServiceClients.call``) then gets ``min(its own deadline, what is left of the
incoming one - deadlines.margin_ms)``; the margin leaves our handler time to turn a
late answer into its own reply before our caller stops listening. A budget already
spent is not sent at all: it fails at once with DEADLINE_EXCEEDED.

Work that does not come from an RPC (a saga consumer, a periodic task) has no
incoming deadline. None of it calls another service today; one that did would open
``deadline_scope(seconds)`` around its work, so the same rule applies to its calls.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator

Clock = Callable[[], float]

_incoming: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "incoming_deadline", default=None
)


def incoming_deadline() -> float | None:
    """The deadline of the call being served, on ``time.monotonic``; None if it has none."""
    return _incoming.get()


def set_incoming_deadline(deadline: float | None) -> contextvars.Token[float | None]:
    return _incoming.set(deadline)


def remember_time_remaining(remaining: float | None, clock: Clock = time.monotonic) -> None:
    """What ``ServicerContext.time_remaining()`` said, as a deadline (None: no deadline)."""
    _incoming.set(None if remaining is None else clock() + remaining)


@contextlib.contextmanager
def deadline_scope(seconds: float, clock: Clock = time.monotonic) -> Iterator[float]:
    """Outbound calls inside the block share a deadline ``seconds`` from now (or the
    current one, if that is sooner); yields it."""
    deadline = clock() + seconds
    current = _incoming.get()
    if current is not None:
        deadline = min(deadline, current)
    token = _incoming.set(deadline)
    try:
        yield deadline
    finally:
        _incoming.reset(token)


def outbound_deadline(
    own_seconds: float | None, margin_ms: float, clock: Clock = time.monotonic
) -> float | None:
    """The deadline of an outbound call: ``own_seconds`` from now, capped by the incoming
    deadline less the margin; None if neither is set. May lie in the past (spent)."""
    now = clock()
    deadline = None if own_seconds is None else now + own_seconds
    incoming = _incoming.get()
    if incoming is not None:
        capped = incoming - margin_ms / 1000.0
        deadline = capped if deadline is None else min(deadline, capped)
    return deadline

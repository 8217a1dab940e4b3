"""When ``ServiceClients.call`` tries again, and how long it waits first: pure rules.

- **What is retried**: UNAVAILABLE (the call never reached a live server, or the
  server refused it before doing anything), and DEADLINE_EXCEEDED only for calls
  marked idempotent (the server may have done the work and only the answer was
  late). Nothing else: INVALID_ARGUMENT, PERMISSION_DENIED, FAILED_PRECONDITION and
  the rest would only fail the same way again.
- **Backoff**: exponential with full jitter, as gRPC's own retry policy: the n-th
  retry waits a random time in [0, min(initial * multiplier^(n-1), max)).
- **Budget** (``RetryBudget``), as gRPC's retryThrottling, one per target service:
  every failed attempt costs a token, every success earns ``budget_token_ratio``, and
  retries happen only while more than half of ``budget_max_tokens`` is left. When a
  service is failing broadly, retries would multiply its load just when it can least
  take it; the budget turns them off until successes earn it back.
- **Deadline**: no retry whose backoff would end past the call's deadline.

Why our own loop, not gRPC's channel ``retryPolicy`` and ``retryThrottling``: a
channel here is one instance (discovery hands us addresses, and we dial each one),
so gRPC's retries would go to the very instance that just failed, while the point
of retrying UNAVAILABLE is to reach another one. gRPC's throttling is per channel
too, so with N instances a failing service would get N budgets; ours is one per
service, like the breaker. And the breaker must see every attempt, which gRPC's
transparent retries hide.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from shared.config.models import RetryPolicy

ALWAYS_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
IDEMPOTENT_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# The codes that cost a budget token: those the service is blamed for.
BUDGET_FAILURES = IDEMPOTENT_RETRYABLE


def retryable(code: grpc.StatusCode, *, idempotent: bool) -> bool:
    return code in (IDEMPOTENT_RETRYABLE if idempotent else ALWAYS_RETRYABLE)


def backoff_seconds(
    retry: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """The wait before retry number ``retry`` (1 for the first retry)."""
    ceiling_ms = min(
        policy.initial_backoff_ms * policy.multiplier ** max(0, retry - 1), policy.max_backoff_ms
    )
    return rand() * ceiling_ms / 1000.0


class RetryBudget:
    """gRPC's retryThrottling for one target service: starts full."""

    def __init__(self) -> None:
        self._tokens: float | None = None  # None: full, whatever max_tokens turns out to be

    def tokens(self, policy: RetryPolicy) -> float:
        # A live change of max_tokens caps what is there; it does not refill it.
        if self._tokens is None:
            return policy.budget_max_tokens
        return min(self._tokens, policy.budget_max_tokens)

    def on_failure(self, policy: RetryPolicy) -> None:
        self._tokens = max(0.0, self.tokens(policy) - 1.0)

    def on_success(self, policy: RetryPolicy) -> None:
        self._tokens = min(
            policy.budget_max_tokens, self.tokens(policy) + policy.budget_token_ratio
        )

    def allows_retry(self, policy: RetryPolicy) -> bool:
        return self.tokens(policy) > policy.budget_max_tokens / 2


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool
    delay: float = 0.0
    why: str = ""  # why not, for the log
    throttled: bool = False  # not retried only because the budget is spent


def decide(
    code: grpc.StatusCode,
    *,
    idempotent: bool,
    attempt: int,
    policy: RetryPolicy,
    budget: RetryBudget,
    remaining: float | None,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """Whether attempt number ``attempt`` (1 is the first), which failed with ``code``, is
    followed by another, and after what delay. ``remaining``: seconds to the call's
    deadline (None: it has none). The budget must already have been charged for it."""
    if not retryable(code, idempotent=idempotent):
        return Decision(False, why=f"{code.name} is not retried")
    if attempt >= policy.max_attempts:
        return Decision(False, why=f"{policy.max_attempts} attempts made")
    if not budget.allows_retry(policy):
        return Decision(False, why="the retry budget is spent", throttled=True)
    delay = backoff_seconds(attempt, policy, rand)
    if remaining is not None and delay >= remaining:
        return Decision(False, why="the deadline would pass before a retry")
    return Decision(True, delay)

"""The performance goals (docs/performance.md), and how a figure is judged and printed: no I/O.

Each goal is measured with every service at one instance and again at two
(``replicas``); a figure is met or NOT met, never rounded into a pass. A goal that
could not be measured (its phase failed) is reported NOT met, with why.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class Goal:
    key: str  # P1..P7, the performance goals; A6, the saga's latency goal under chaos
    name: str  # as printed: what the figure is
    unit: str  # "" for a ratio
    target: float
    at_least: bool  # True: the figure must be >= target; False: <= target
    how: str  # how it is measured, for the JSON and BENCHMARKS.md

    @property
    def comparison(self) -> str:
        return ">=" if self.at_least else "<="

    def met(self, value: float) -> bool:
        compare: Callable[[float, float], bool] = operator.ge if self.at_least else operator.le
        return compare(value, self.target)


GOALS: Final = (
    Goal(
        "P1",
        "get_product_vs_check",
        "",
        0.8,
        True,
        "ghz at saturation on one product instance: authenticated GetProduct calls/s over"
        " health Check calls/s, rounds alternated, mTLS and a token on both",
    ),
    Goal("P2", "saga_p95_at_100", "ms", 150, False, "steady saga, 100 orders/s, open loop"),
    Goal(
        "P3",
        "saga_capacity",
        "orders/s",
        200,
        True,
        "highest rate of a ramp with >= 99 % of orders terminal and P95 <= 500 ms",
    ),
    Goal("P4", "saga_p50_at_20", "ms", 40, False, "steady saga, 20 orders/s, open loop"),
    Goal(
        "P5",
        "hot_sku_vs_pgbench",
        "",
        1.5,
        True,
        "hot-SKU reservations/s over pgbench's one-row conditional UPDATE transactions/s",
    ),
    Goal(
        "P6",
        "max_rss_per_instance",
        "MB",
        150,
        False,
        "largest resident set of any service instance after the load phases",
    ),
    Goal(
        "P7",
        "outbox_relay_lag_p99_at_500",
        "ms",
        1000,
        False,
        "outbox rows committed at 500/s, each from commit to Kafka's acknowledgement",
    ),
)
# The saga's latency goal of the chaos goals (docs/chaos.md), measured on the same ramp;
# printed with the others, kept out of BENCHMARKS.md's columns (those are P1..P7's).
SAGA_P95_AT_50: Final = Goal(
    "A6",
    "saga_p95_at_50",
    "ms",
    300,
    False,
    "steady saga, 50 orders/s, open loop, the provider simulator at its default latency"
    " (the chaos goals, docs/chaos.md)",
)
BY_KEY: Final = {g.key: g for g in (*GOALS, SAGA_P95_AT_50)}
# P3's bar for a rate to count as sustained.
CAPACITY_TERMINAL_SHARE: Final = 0.99
CAPACITY_P95_MS: Final = 500.0


@dataclass(frozen=True)
class Result:
    goal: Goal
    replicas: int
    value: float | None  # None: not measured
    detail: Mapping[str, Any]
    error: str | None = None

    @property
    def met(self) -> bool:
        return self.value is not None and self.goal.met(self.value)

    def line(self) -> str:
        goal = self.goal
        bar = f"goal {goal.comparison} {goal.target:g}{' ' + goal.unit if goal.unit else ''}"
        if self.value is None:
            figure = "not measured"
        elif goal.unit:
            digits = 0 if self.value >= 10 else 1
            figure = f"{self.value:,.{digits}f} {goal.unit}"
        else:
            figure = f"{self.value:.2f}"
        verdict = "met" if self.met else "NOT met"
        where = f"{self.replicas} instance{'s' if self.replicas > 1 else ''} per service"
        why = f": {self.error}" if self.error else ""
        return f"bench: {goal.key} {goal.name} {figure} ({bar}) {verdict} [{where}]{why}"

    def as_json(self) -> dict[str, Any]:
        return {
            "goal": self.goal.key,
            "name": self.goal.name,
            "replicas": self.replicas,
            "value": self.value,
            "unit": self.goal.unit,
            "target": f"{self.goal.comparison} {self.goal.target:g}",
            "met": self.met,
            "how": self.goal.how,
            "detail": dict(self.detail),
            "error": self.error,
        }


def sustained(completed: int, orders: int, p95_ms: float) -> bool:
    """P3: did a run of ``orders`` keep up (enough reached a terminal state, fast enough)?"""
    if orders <= 0:
        return False
    return completed / orders >= CAPACITY_TERMINAL_SHARE and p95_ms <= CAPACITY_P95_MS


def capacity(runs: Mapping[float, bool]) -> float:
    """The highest rate of an increasing ramp below which every rate was sustained; 0 if none."""
    best = 0.0
    for rate in sorted(runs):
        if not runs[rate]:
            break
        best = rate
    return best

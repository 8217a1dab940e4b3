"""Figures from recorded calls: percentiles, throughput, and ratios to the baseline.

Definitions (docs/load-tests.md repeats them):
- latency percentiles are nearest-rank over every completed call, whatever its
  status (a timeout is latency a user felt), in milliseconds;
- ``qps`` is successful calls per second over the window, the window being the
  scenario's duration or, if the last call ended later, up to that end;
- ``offered_qps`` is calls the plan asked for (made + dropped) per second of duration;
- ratios compare an RPC with the bare health Check of the same run: latency
  ratio = RPC percentile / Check percentile (1.0 = as fast as the bare RPC);
  throughput ratio = (qps / offered_qps) of the RPC over the same for Check,
  i.e. the share of its offered load each one served (1.0 = kept up as well).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from loadgen.driver import Call, SagaOutcome

OK = "OK"
UNFINISHED = "UNFINISHED"
PERCENTILES = (50, 95, 99)


def latency_figures(seconds: Sequence[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    ms = np.asarray(seconds, dtype=float) * 1000.0
    p50, p95, p99 = np.percentile(ms, PERCENTILES, method="inverted_cdf")
    return {
        "p50_ms": round(float(p50), 3),
        "p95_ms": round(float(p95), 3),
        "p99_ms": round(float(p99), 3),
        "max_ms": round(float(ms.max()), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def rpc_figures(calls: Sequence[Call], dropped: int, duration: float) -> dict[str, Any]:
    ok = sum(1 for c in calls if c.code == OK)
    window = max([duration, *(c.end for c in calls)])
    errors = Counter(c.code for c in calls if c.code != OK)
    return {
        "count": len(calls),
        "ok": ok,
        "qps": round(ok / window, 3),
        "offered_qps": round((len(calls) + dropped) / duration, 3),
        **latency_figures([c.latency for c in calls]),
        "errors": dict(sorted(errors.items())),
        "dropped": dropped,
    }


def all_rpc_figures(
    calls: Mapping[str, Sequence[Call]], dropped: Mapping[str, int], duration: float
) -> dict[str, dict[str, Any]]:
    names = sorted(set(calls) | set(dropped))
    return {n: rpc_figures(calls.get(n, ()), dropped.get(n, 0), duration) for n in names}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def served_share(figures: Mapping[str, Any]) -> float | None:
    offered = figures["offered_qps"]
    return figures["qps"] / offered if offered else None


def ratios_to(baseline: Mapping[str, Any], figures: Mapping[str, Any]) -> dict[str, float | None]:
    return {
        "qps": _ratio(served_share(figures), served_share(baseline)),
        "p50": _ratio(figures["p50_ms"], baseline["p50_ms"]),
        "p95": _ratio(figures["p95_ms"], baseline["p95_ms"]),
        "p99": _ratio(figures["p99_ms"], baseline["p99_ms"]),
    }


def saga_figures(
    outcomes: Sequence[SagaOutcome], duration: float, intended: Iterable[str], offered: int
) -> dict[str, Any]:
    """Orders followed to their end: states, completion latency, orders/s to a terminal state."""
    intended = set(intended)
    states = Counter(o.state for o in outcomes)
    terminal = [o for o in outcomes if o.latency is not None and o.state != UNFINISHED]
    window = max([duration, *(o.start + (o.latency or 0.0) for o in terminal)])
    by_state = {
        state: latency_figures([o.latency for o in terminal if o.state == state and o.latency])
        for state in sorted({o.state for o in terminal})
    }
    return {
        "orders": len(outcomes),
        "terminal": dict(sorted(states.items())),
        "intended_states": sorted(intended),
        "unintended": sum(n for s, n in states.items() if s not in intended),
        **latency_figures([o.latency for o in terminal if o.latency is not None]),
        "by_state": by_state,
        "orders_per_s": round(len(terminal) / window, 3),
        # Orders the plan asked for (PlaceOrder made + dropped), per second of duration.
        "offered_orders_per_s": round(offered / duration, 3),
    }

"""The chaos run's figures and goals, from what was recorded: pure functions, no I/O.

Times are seconds since the run's first scheduled arrival.

- **arrivals failed**: PlaceOrder arrivals that never got an order accepted (the
  call still failed after its retries, or the arrival was dropped at the
  concurrency cap), over all scheduled arrivals, in %.
- **timed out**: orders of the run cancelled by the saga timeout (their
  ``status_reason`` is the order service's ``SAGA_TIMED_OUT``).
- **confirmed of stock**: the flash sale's orders CONFIRMED against its stock.
- **unsold while rejected**: if any flash-sale buyer was rejected as out of stock,
  the units the sale still had at its end (stock - confirmed), since those buyers
  were turned away from stock that was held, not sold; otherwise 0 (a sale that
  turned no one away has nothing to answer for).
- **recovery** of a fault: ``R = min{end(o) : start(o) >= healed, o reached its
  intended state} - healed``: from the heal to the moment the first order placed
  at or after the heal reached the terminal state it was meant to reach
  (CONFIRMED; in the flash sale also REJECTED, out of stock). An instant fault
  (SIGKILL of an instance, whose restart is the supervisor's job, not the
  runner's) heals the moment it is injected. None: no such order by the run's end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.driver import SagaOutcome

OUT_OF_STOCK_PREFIX = "out of stock"
GOAL_RECOVERY_S = 5.0
GOAL_ARRIVALS_FAILED_PCT = 1.0


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault; ``start``/``healed`` on the run's clock, plus wall clock."""

    label: str
    kind: str
    target: str
    start: float
    healed: float
    start_wall: str
    healed_wall: str
    detail: str = ""
    error: str | None = None  # it could not be injected (or healed) as planned


def recovery_seconds(
    healed: float, sagas: Sequence[SagaOutcome], intended: Callable[[SagaOutcome], bool]
) -> float | None:
    """The module's R for a fault healed at ``healed``; None if no order qualifies."""
    ends = [o.end for o in sagas if o.start >= healed and o.end is not None and intended(o)]
    return round(min(ends) - healed, 3) if ends else None


def unsold_while_rejected(stock: int, confirmed: int, rejected_out_of_stock: int) -> int:
    return max(0, stock - confirmed) if rejected_out_of_stock > 0 else 0


def arrivals_failed_pct(scheduled: int, failed: int) -> float:
    return round(100.0 * failed / scheduled, 3) if scheduled else 0.0


def is_out_of_stock(outcome: SagaOutcome) -> bool:
    return outcome.state == "REJECTED" and outcome.reason.startswith(OUT_OF_STOCK_PREFIX)


@dataclass(frozen=True)
class Figures:
    faults: int
    arrivals_failed_pct: float
    timed_out: int
    confirmed: int
    stock: int
    unsold_while_rejected: int
    recoveries: tuple[float | None, ...]  # per fault, in schedule order
    audit_ok: bool
    # How long after the last heal the run looked for a recovery (for an unmeasured one).
    observed_after_last_heal: float = 0.0

    @property
    def max_recovery(self) -> float | None:
        """The slowest recovery; None if some fault never recovered (or none was run)."""
        if not self.recoveries or any(r is None for r in self.recoveries):
            return None
        return max(r for r in self.recoveries if r is not None)


def goals(figures: Figures, fault_errors: int = 0) -> dict[str, dict[str, Any]]:
    """The chaos goals (docs/chaos.md), each with its value and whether it was met."""

    def goal(value: Any, target: str, met: bool) -> dict[str, Any]:
        return {"value": value, "goal": target, "met": met}

    recoveries_met = all(r is not None and r <= GOAL_RECOVERY_S for r in figures.recoveries)
    return {
        "audit": goal("ok" if figures.audit_ok else "FAILED", "ok", figures.audit_ok),
        "timed_out": goal(figures.timed_out, "0", figures.timed_out == 0),
        "arrivals_failed_pct": goal(
            figures.arrivals_failed_pct,
            f"<= {GOAL_ARRIVALS_FAILED_PCT:g}",
            figures.arrivals_failed_pct <= GOAL_ARRIVALS_FAILED_PCT,
        ),
        "flash_sale_sold_stock": goal(
            f"{figures.confirmed} of {figures.stock}, {figures.unsold_while_rejected} unsold"
            " while rejected",
            "confirmed == stock, 0 unsold while rejected",
            figures.confirmed == figures.stock and figures.unsold_while_rejected == 0,
        ),
        "recovery_s": goal(
            list(figures.recoveries),
            f"every fault <= {GOAL_RECOVERY_S:g}",
            recoveries_met and bool(figures.recoveries),
        ),
        "faults_injected": goal(
            figures.faults - fault_errors, f"{figures.faults}", fault_errors == 0
        ),
    }


def passed(goal_table: Mapping[str, Mapping[str, Any]]) -> bool:
    return all(g["met"] for g in goal_table.values())


def _seconds(value: float | None, observed: float) -> str:
    return f">{observed:.1f}" if value is None else f"{value:.1f}"


def chaos_line(figures: Figures) -> str:
    """The one line `make chaos` ends with."""
    return (
        f"chaos: faults {figures.faults} · arrivals failed {figures.arrivals_failed_pct:.1f}% · "
        f"timed out {figures.timed_out} · confirmed {figures.confirmed} of stock {figures.stock} · "
        f"unsold-while-rejected {figures.unsold_while_rejected} · max recovery "
        f"{_seconds(figures.max_recovery, figures.observed_after_last_heal)} s · "
        f"audit {'ok' if figures.audit_ok else 'FAILED'}"
    )


def fault_rows(
    faults: Sequence[FaultRecord], recoveries: Sequence[float | None], placing_until: float
) -> list[tuple[str, ...]]:
    """The per-fault table: times on the run's clock and the wall clock; an unmeasured
    recovery shows as more than the time orders were still placed after its heal."""
    rows: list[tuple[str, ...]] = [("FAULT", "START", "HEALED", "RECOVERY S", "NOTE")]
    for fault, recovery in zip(faults, recoveries, strict=True):
        rows.append(
            (
                fault.label,
                f"+{fault.start:.1f}s {fault.start_wall[11:23]}",
                f"+{fault.healed:.1f}s {fault.healed_wall[11:23]}",
                _seconds(recovery, max(0.0, placing_until - fault.healed)),
                fault.error or fault.detail,
            )
        )
    return rows

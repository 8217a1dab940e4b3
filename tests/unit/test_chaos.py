"""The chaos runner's pure parts: recovery, unsold-while-rejected, goals, the line."""

from __future__ import annotations

import pytest

from loadgen.driver import SagaOutcome
from perf.chaos import figures as fig
from perf.chaos.schedule import FULL, SHORT, FaultSpec


def confirmed(o: SagaOutcome) -> bool:
    return o.state == "CONFIRMED"


def test_recovery_is_the_first_intended_end_among_orders_placed_after_the_heal() -> None:
    sagas = [
        SagaOutcome(9.0, 3.0, "CONFIRMED"),  # placed before the heal: does not count
        SagaOutcome(10.5, 0.2, "CANCELLED", "payment failed"),  # not its intended state
        SagaOutcome(11.0, 2.5, "CONFIRMED"),  # ends at 13.5
        SagaOutcome(12.0, 0.5, "CONFIRMED"),  # ends at 12.5: the first to end
        SagaOutcome(12.2, None, "UNFINISHED"),
    ]
    assert fig.recovery_seconds(10.0, sagas, confirmed) == pytest.approx(2.5)


def test_an_order_placed_exactly_at_the_heal_counts_and_none_means_never() -> None:
    assert fig.recovery_seconds(5.0, [SagaOutcome(5.0, 0.25, "CONFIRMED")], confirmed) == 0.25
    failed = [SagaOutcome(6.0, 1.0, "CANCELLED", "saga timed out"), SagaOutcome(7, None, "X")]
    assert fig.recovery_seconds(5.0, failed, confirmed) is None
    assert fig.recovery_seconds(5.0, [], confirmed) is None


def test_unsold_while_rejected_counts_only_when_someone_was_turned_away() -> None:
    assert fig.unsold_while_rejected(stock=500, confirmed=297, rejected_out_of_stock=327) == 203
    assert fig.unsold_while_rejected(stock=500, confirmed=500, rejected_out_of_stock=40) == 0
    # Nobody rejected: fewer buyers got through than there was stock, which is not this.
    assert fig.unsold_while_rejected(stock=500, confirmed=300, rejected_out_of_stock=0) == 0


def test_out_of_stock_is_told_by_the_rejection_reason() -> None:
    assert fig.is_out_of_stock(SagaOutcome(1, 0.1, "REJECTED", "out of stock: LOAD-FLASH-1"))
    assert not fig.is_out_of_stock(SagaOutcome(1, 0.1, "CANCELLED", "saga timed out"))
    assert not fig.is_out_of_stock(SagaOutcome(1, 0.1, "REJECTED", "unknown product"))


def figures(**changes: object) -> fig.Figures:
    base: dict[str, object] = {
        "faults": 2,
        "arrivals_failed_pct": 0.25,
        "timed_out": 0,
        "confirmed": 60,
        "stock": 60,
        "unsold_while_rejected": 0,
        "recoveries": (0.4, 3.25),
        "audit_ok": True,
        "observed_after_last_heal": 12.0,
    }
    return fig.Figures(**(base | changes))  # type: ignore[arg-type]


def test_the_line_has_the_exact_shape() -> None:
    assert fig.chaos_line(figures()) == (
        "chaos: faults 2 · arrivals failed 0.2% · timed out 0 · confirmed 60 of stock 60 · "
        "unsold-while-rejected 0 · max recovery 3.2 s · audit ok"
    )
    line = fig.chaos_line(figures(recoveries=(0.4, None), audit_ok=False, timed_out=7))
    assert line.endswith("timed out 7 · confirmed 60 of stock 60 · unsold-while-rejected 0 · "
                         "max recovery >12.0 s · audit FAILED")  # fmt: skip


def test_every_goal_met_passes() -> None:
    table = fig.goals(figures())
    assert fig.passed(table), table


@pytest.mark.parametrize(
    ("changes", "missed"),
    [
        ({"audit_ok": False}, "audit"),
        ({"timed_out": 1}, "timed_out"),
        ({"arrivals_failed_pct": 1.01}, "arrivals_failed_pct"),
        ({"confirmed": 59}, "flash_sale_sold_stock"),
        ({"unsold_while_rejected": 3, "confirmed": 57}, "flash_sale_sold_stock"),
        ({"recoveries": (0.4, 5.01)}, "recovery_s"),
        ({"recoveries": (None, 1.0)}, "recovery_s"),
        ({"recoveries": ()}, "recovery_s"),
    ],
)
def test_each_goal_can_be_missed(changes: dict[str, object], missed: str) -> None:
    table = fig.goals(figures(**changes))
    assert not fig.passed(table)
    assert [name for name, g in table.items() if not g["met"]] == [missed]


def test_a_fault_that_could_not_be_injected_fails_the_run() -> None:
    table = fig.goals(figures(), fault_errors=1)
    assert [name for name, g in table.items() if not g["met"]] == ["faults_injected"]


def test_the_fault_table_shows_run_time_wall_time_and_never() -> None:
    record = fig.FaultRecord(
        "SIGKILL order", "kill-instance", "order", 8.0, 8.0,
        "2025-01-01T10:00:08.000+00:00", "2025-01-01T10:00:08.000+00:00", "order-1-ab pid 42",
    )  # fmt: skip
    rows = fig.fault_rows([record, record], [0.35, None], placing_until=30.0)
    assert rows[0] == ("FAULT", "START", "HEALED", "RECOVERY S", "NOTE")
    assert rows[1] == (
        "SIGKILL order", "+8.0s 10:00:08.000", "+8.0s 10:00:08.000", "0.3", "order-1-ab pid 42"
    )  # fmt: skip
    assert rows[2][3] == ">22.0"


def test_the_profiles_fit_their_budgets() -> None:
    # The short one runs in make test: two faults, well under two minutes of load.
    assert len(SHORT.faults) == 2 and SHORT.duration <= 40
    assert SHORT.rate * SHORT.flash_seconds > SHORT.stock  # more buyers than stock
    assert FULL.rate * FULL.flash_seconds > FULL.stock
    kinds = {f.kind for f in FULL.faults}
    assert kinds == {"kill-instance", "stop-instance", "kill-component", "rewind-offsets",
                     "slow-provider"}  # fmt: skip
    assert {f.target for f in FULL.faults if f.kind == "kill-instance"} == {
        "user", "product", "inventory", "payment", "order"
    }  # fmt: skip
    assert {f.target for f in FULL.faults if f.kind == "kill-component"} == {
        "postgres", "kafka", "etcd"
    }  # fmt: skip
    assert all(f.at < FULL.duration for f in FULL.faults)
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultSpec(1, "unplug", "order")


def test_a_profile_at_another_rate_keeps_its_schedule_and_the_ratio_of_buyers_to_stock() -> None:
    faster = FULL.at_rate(FULL.rate * 2)
    assert faster.rate == FULL.rate * 2
    assert faster.faults == FULL.faults and faster.duration == FULL.duration
    assert faster.stock == FULL.stock * 2
    assert faster.name == f"full@{FULL.rate * 2:g}"
    slow = SHORT.at_rate(0.1)
    assert slow.stock == 1  # a sale always has something to sell

"""make bench's goals: how a figure is judged and printed (pure)."""

from __future__ import annotations

from perf.bench.goals import BY_KEY, GOALS, SAGA_P95_AT_50, Result, capacity, sustained


def test_every_goal_of_the_issue_once_in_order() -> None:
    assert [g.key for g in GOALS] == [f"P{n}" for n in range(1, 8)]


def test_a_line_says_the_figure_the_goal_and_the_verdict() -> None:
    p1 = Result(BY_KEY["P1"], 1, 0.4321, {})
    assert p1.line() == (
        "bench: P1 get_product_vs_check 0.43 (goal >= 0.8) NOT met [1 instance per service]"
    )
    p2 = Result(BY_KEY["P2"], 2, 149.6, {})
    assert p2.met
    assert p2.line() == (
        "bench: P2 saga_p95_at_100 150 ms (goal <= 150 ms) met [2 instances per service]"
    )


def test_the_bar_itself_meets_the_goal_both_ways() -> None:
    assert Result(BY_KEY["P1"], 1, 0.8, {}).met  # at least
    assert Result(BY_KEY["P6"], 1, 150.0, {}).met  # at most
    assert not Result(BY_KEY["P6"], 1, 150.1, {}).met


def test_a_goal_not_measured_is_not_met_and_says_why() -> None:
    result = Result(BY_KEY["P7"], 1, None, {}, error="events never published")
    assert not result.met
    assert "not measured" in result.line() and result.line().endswith("events never published")
    assert result.as_json()["value"] is None


def test_capacity_is_the_last_rate_before_the_first_miss() -> None:
    assert capacity({50: True, 75: True, 100: False, 150: True}) == 75
    assert capacity({100: False}) == 0
    assert capacity({}) == 0


def test_a_rate_is_sustained_with_99_percent_terminal_within_500_ms() -> None:
    assert sustained(990, 1000, 500.0)
    assert not sustained(989, 1000, 100.0)
    assert not sustained(1000, 1000, 500.1)
    assert not sustained(0, 0, 0.0)


def test_issue_10s_saga_goal_is_judged_like_the_others_but_has_no_column() -> None:
    assert BY_KEY["A6"] is SAGA_P95_AT_50 and SAGA_P95_AT_50 not in GOALS
    assert Result(SAGA_P95_AT_50, 2, 300.0, {}).met
    assert not Result(SAGA_P95_AT_50, 2, 301.0, {}).met
    assert Result(SAGA_P95_AT_50, 2, 432.4, {}).line() == (
        "bench: A6 saga_p95_at_50 432 ms (goal <= 300 ms) NOT met [2 instances per service]"
    )

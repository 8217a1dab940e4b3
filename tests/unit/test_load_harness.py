"""The load harness's own rules, without a system: open loop, drops, figures, plans."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from loadgen.driver import Call, OpenLoop, Recorder, SagaOutcome
from loadgen.scenarios import MIXED_WEIGHTS, make_plan
from loadgen.settings import (
    BROWSE,
    FLASH_SALE,
    MIXED,
    PROFILES,
    SCENARIOS,
    STEADY_SAGA,
    ScenarioSettings,
    resolve,
)
from loadgen.stats import latency_figures, ratios_to, rpc_figures, saga_figures


async def test_arrivals_start_on_schedule_without_waiting_for_earlier_ones() -> None:
    loop = asyncio.get_running_loop()
    launched: list[float] = []

    async def slow(_arrival: int, due: float) -> bool:
        launched.append(loop.time() - due)
        await asyncio.sleep(0.3)  # far longer than the 10 ms between arrivals
        return True

    result = await OpenLoop[int](rate=100, concurrency=100, op=slow).run(range(20), Recorder())
    assert result.succeeded == 20 and result.dropped == 0
    assert max(launched) < 0.05  # nobody waited for the 0.3 s of the ones before
    assert result.elapsed < 0.3 + 0.19 + 0.1


async def test_a_slow_server_shows_up_as_latency_not_as_a_slower_schedule() -> None:
    """One request at a time, 20 ms each, asked for every 5 ms: the queue grows, and the
    latency measured from the scheduled time shows it (no coordinated omission)."""
    loop = asyncio.get_running_loop()
    server = asyncio.Lock()
    recorder = Recorder()

    async def serve(_arrival: int, due: float) -> bool:
        async with server:
            await asyncio.sleep(0.02)
        recorder.call("Work", due, loop.time(), "OK")
        return True

    await OpenLoop[int](rate=200, concurrency=1000, op=serve).run(range(40), recorder)
    latencies = sorted(c.latency for c in recorder.calls["Work"])
    # The last of 40 waits for ~39 * 20 ms of work that arrived over only 39 * 5 ms.
    assert latencies[-1] > 0.5
    assert latencies[0] < 0.1


async def test_arrivals_beyond_the_cap_are_dropped_and_counted_not_delayed() -> None:
    dropped: list[int] = []

    async def hang(_arrival: int, _due: float) -> bool:
        await asyncio.sleep(0.5)
        return True

    loop = OpenLoop[int](rate=100, concurrency=2, op=hang, on_drop=dropped.append)
    result = await loop.run(range(10), Recorder())
    assert (result.succeeded, result.dropped) == (2, 8)
    assert dropped == list(range(2, 10))
    assert result.error_rate == pytest.approx(0.8)


async def test_failed_crashed_and_unfinished_operations_count_against_the_run() -> None:
    async def op(arrival: int, _due: float) -> bool:
        if arrival == 0:
            return False
        if arrival == 1:
            raise RuntimeError("boom")
        if arrival == 2:
            await asyncio.sleep(10)
        return True

    loop = OpenLoop[int](rate=1000, concurrency=10, op=op, drain_timeout=0.2)
    result = await loop.run(range(4), Recorder())
    assert (result.succeeded, result.failed, result.unfinished) == (1, 2, 1)
    assert result.error_rate == pytest.approx(0.75)


def test_percentiles_are_nearest_rank_and_ordered() -> None:
    figures = latency_figures([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (figures["p50_ms"], figures["p95_ms"], figures["p99_ms"], figures["max_ms"]) == (
        50.0,
        95.0,
        99.0,
        100.0,
    )
    assert latency_figures([])["p50_ms"] is None


def test_rpc_figures_count_errors_by_code_and_qps_over_the_window() -> None:
    calls = [Call(i * 0.1, 0.01, "OK") for i in range(18)] + [
        Call(0.5, 0.02, "UNAVAILABLE"),
        Call(0.6, 5.0, "DEADLINE_EXCEEDED"),  # ends at 5.6 s, past the 2 s duration
    ]
    figures = rpc_figures(calls, dropped=2, duration=2.0)
    assert figures["count"] == 20
    assert figures["errors"] == {"DEADLINE_EXCEEDED": 1, "UNAVAILABLE": 1}
    assert figures["qps"] == pytest.approx(18 / 5.6, abs=1e-3)
    assert figures["offered_qps"] == 11.0
    assert figures["max_ms"] == 5000.0


def test_ratios_compare_latency_and_the_share_of_offered_load_served() -> None:
    baseline = {"qps": 100.0, "offered_qps": 100.0, "p50_ms": 2.0, "p95_ms": 4.0, "p99_ms": 5.0}
    rpc = {"qps": 20.0, "offered_qps": 25.0, "p50_ms": 6.0, "p95_ms": 10.0, "p99_ms": 20.0}
    assert ratios_to(baseline, rpc) == {"qps": 0.8, "p50": 3.0, "p95": 2.5, "p99": 4.0}


def test_saga_figures_count_states_and_orders_through_to_the_end() -> None:
    outcomes = [SagaOutcome(i * 0.1, 0.2, "CONFIRMED") for i in range(8)]
    outcomes += [SagaOutcome(0.9, 0.1, "REJECTED"), SagaOutcome(0.95, None, "UNFINISHED")]
    figures = saga_figures(outcomes, 1.0, {"CONFIRMED", "REJECTED"}, offered=10)
    assert figures["terminal"] == {"CONFIRMED": 8, "REJECTED": 1, "UNFINISHED": 1}
    assert figures["unintended"] == 1
    assert figures["orders_per_s"] == 9.0  # 9 terminal, all ended within the second
    assert figures["p50_ms"] == 200.0


def test_plans_are_fixed_by_the_seed() -> None:
    settings = ScenarioSettings(MIXED, rate=100, duration=20, users=30)
    assert make_plan(settings) == make_plan(settings)
    other = make_plan(ScenarioSettings(MIXED, rate=100, duration=20, users=30, seed=2))
    assert other != make_plan(settings)
    kinds = Counter(a.kind for a in make_plan(settings))
    for kind, weight in MIXED_WEIGHTS.items():
        assert kinds[kind] / 2000 == pytest.approx(weight / 100, abs=0.03)


def test_a_browse_plan_only_reads_products() -> None:
    plan = make_plan(ScenarioSettings(BROWSE, rate=50, duration=2, users=5))
    assert len(plan) == 100 and {a.kind for a in plan} == {"GetProduct"}


def test_a_flash_sale_gives_every_buyer_a_turn_before_anyone_goes_again() -> None:
    plan = make_plan(ScenarioSettings(FLASH_SALE, rate=10, duration=5, users=20))
    assert sorted(a.buyer for a in plan[:20]) == list(range(20))
    assert all(a.kind == "PlaceOrder" and a.items == ((0, 1),) for a in plan)


def test_profiles_cover_every_scenario_and_overrides_apply() -> None:
    assert {s.scenario for s in PROFILES["smoke"]} == set(SCENARIOS)
    assert sum(s.duration + s.baseline_seconds for s in PROFILES["smoke"]) < 30
    for profile, scenario in [
        *((s, s) for s in (FLASH_SALE, MIXED, STEADY_SAGA)),
        ("browse-peak", BROWSE),
    ]:
        assert [s.scenario for s in PROFILES[profile]] == [scenario]
    assert {s.scenario for s in PROFILES["full"]} == set(SCENARIOS)
    (only,) = resolve("smoke", scenario=MIXED, rate=7.0, users=None)
    assert (only.scenario, only.rate, only.users) == (MIXED, 7.0, PROFILES["smoke"][1].users)
    with pytest.raises(ValueError, match="unknown profile"):
        resolve("nope")

"""The load harness end to end, briefly: each scenario against the whole system, then its report.

These prove the instrument works (plans run, the report is complete and sane,
the audit passes, the picture is written); they assert nothing about speed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.stack import Stack
from loadgen.buyers import Buyer, sign_in_buyers
from loadgen.dev_target import stack_target
from loadgen.runner import run_scenario
from loadgen.settings import (
    BROWSE,
    FLASH_SALE,
    MIXED,
    SCENARIOS,
    STEADY_SAGA,
    ScenarioSettings,
)
from loadgen.target import Target
from tests.e2e.conftest import running_system
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e

USERS = 8
STOCK = 20
SHORT = {
    FLASH_SALE: ScenarioSettings(
        FLASH_SALE, rate=30, duration=2, users=USERS, stock=STOCK, baseline_duration=1
    ),
    MIXED: ScenarioSettings(MIXED, rate=40, duration=2, users=USERS, baseline_duration=1),
    STEADY_SAGA: ScenarioSettings(
        STEADY_SAGA, rate=15, duration=2, users=USERS, baseline_duration=1
    ),
    BROWSE: ScenarioSettings(BROWSE, rate=50, duration=2, users=USERS, baseline_duration=1),
}
FIGURES = {"count", "qps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def loaded(stack: Stack, keys: TestKeys) -> AsyncIterator[tuple[Target, list[Buyer]]]:
    async with running_system(stack, keys) as system:
        target = stack_target(stack, system.clients, system.directory)
        yield target, await sign_in_buyers(system.clients, USERS)


def assert_sane(figures: dict, name: str) -> None:
    assert set(figures) >= FIGURES, name
    assert figures["count"] > 0, name
    assert figures["qps"] > 0, name
    p50, p95, p99, top = (figures[k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
    assert 0 < p50 <= p95 <= p99 <= top, name


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_a_short_run_writes_a_complete_sane_report(
    loaded: tuple[Target, list[Buyer]], scenario: str, tmp_path: Path
) -> None:
    target, buyers = loaded
    settings = SHORT[scenario]
    result = await run_scenario(
        settings, target, buyers, tmp_path, profile="ci", say=lambda _: None
    )

    assert result.json_path.name.startswith(f"{scenario}-")
    report = json.loads(result.json_path.read_text())
    assert report["ok"], result.summary
    assert report["audit"]["ok"], result.summary
    assert report["load"]["scheduled"] == settings.arrivals
    assert report["load"]["error_rate"] <= settings.max_error_rate
    assert_sane(report["baseline"], "baseline")
    assert report["baseline"]["rpc"] == "grpc.health.v1.Health/Check"
    for name, figures in report["rpcs"].items():
        assert_sane(figures, name)
        assert set(report["ratios"][name]) == {"qps", "p50", "p95", "p99"}
        assert report["ratios"][name]["p50"] > 0
    # What the services measured, from the test stack's Prometheus (a 2 s run may fall
    # between two scrapes, so only its shape is certain).
    saw = report["services_saw"]
    assert "error" not in saw, saw
    assert set(saw) >= {"server_p95_ms", "outbox_backlog_peak", "consumer_lag_peak"}, saw
    png = result.png_path.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    assert result.png_path == result.json_path.with_suffix(".png")
    if scenario == BROWSE:
        assert set(report["rpcs"]) == {"GetProduct"} and report["saga"] is None
        assert report["goals"]["get_product_throughput_vs_check"]["value"] > 0
        return
    saga = report["saga"]
    assert saga["orders"] == report["rpcs"]["PlaceOrder"]["ok"]
    assert sum(saga["terminal"].values()) == saga["orders"]
    assert 0 < saga["p50_ms"] <= saga["p95_ms"] <= saga["p99_ms"] <= saga["max_ms"]
    assert saga["orders_per_s"] > 0
    if scenario == FLASH_SALE:
        # More buyers than units: the stock sells out exactly, the rest is rejected.
        assert saga["terminal"] == {"CONFIRMED": STOCK, "REJECTED": saga["orders"] - STOCK}
    else:
        assert saga["terminal"] == {"CONFIRMED": saga["orders"]}
    if scenario == MIXED:
        assert set(report["rpcs"]) >= {"GetProduct", "ListProducts", "BatchGetProducts"}

"""The load harness through the gateway, briefly: the REST profile's scenarios beside their
gRPC twins, as the loadgen OAuth2 client, then the comparison and the audit.

Like test_load.py, these prove the instrument (a client credentials token from the
gateway's /oauth2/token, the wallet funded over REST, orders placed and followed to their
end over Server-Sent Events, the same report, a clean audit); nothing about speed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.stack import Stack
from loadgen import edge
from loadgen.dev_target import UNLIMITED_GATEWAY, stack_target
from loadgen.rest import ROUTES
from loadgen.runner import run_scenarios
from loadgen.settings import BROWSE, REST, STEADY_SAGA, ScenarioSettings, edge_pair
from loadgen.target import Target
from ops.audit import audit
from tests.e2e.conftest import running_system
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e

# Low rates, a few seconds: a 2-core CI machine keeps up with them whatever else runs.
SHORT = (
    *edge_pair(ScenarioSettings(BROWSE, rate=10, duration=2, baseline_duration=1, settle=5)),
    *edge_pair(ScenarioSettings(STEADY_SAGA, rate=5, duration=2, baseline_duration=1, settle=20)),
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def target(stack: Stack, keys: TestKeys) -> AsyncIterator[Target]:
    # As `make load` starts a stack for the REST profile: the gateway's rate limit off.
    async with running_system(stack, keys, gateway=True, extra_env=UNLIMITED_GATEWAY) as system:
        yield stack_target(stack, system.clients, system.directory, system.gateway_url)


async def test_the_rest_profile_reports_successes_and_leaves_a_clean_audit(
    target: Target, tmp_path: Path
) -> None:
    results = await run_scenarios(SHORT, target, tmp_path, profile="ci", say=lambda _: None)

    reports = [json.loads(r.json_path.read_text()) for r in results]
    for result, report in zip(results, reports, strict=True):
        assert report["ok"] and report["audit"]["ok"], result.summary
        assert report["load"]["succeeded"] > 0, result.summary
        assert all(f["ok"] > 0 for f in report["rpcs"].values()), result.summary
    rest = [r for r in reports if r["settings"]["via"] == REST]
    assert [r["scenario"] for r in rest] == [BROWSE, STEADY_SAGA]
    assert [p.name.rsplit("-", 1)[0] for p in (r.json_path for r in results)] == [
        "browse", "browse-rest", "steady-saga", "steady-saga-rest"
    ]  # fmt: skip
    for report in rest:
        assert report["baseline"]["rpc"] == ROUTES["Health/Check"]
        assert report["baseline"]["ok"] > 0
        assert report["edge"]["client_id"] == "loadgen" and report["edge"]["tokens_fetched"] >= 1
        assert report["edge"]["rate_limited"] == 0
        assert report["load"]["generator_cpu_ms_per_arrival"] > 0
    # Every order through the gateway reached its end as the one buyer, who could pay.
    saga = rest[1]["saga"]
    assert saga["orders"] == rest[1]["rpcs"]["PlaceOrder"]["ok"] > 0
    assert saga["terminal"] == {"CONFIRMED": saga["orders"]}
    assert rest[1]["rpcs"]["WatchOrder"]["ok"] == saga["orders"]
    # The gRPC twins bought as the same pseudo-user, from the same plan.
    grpc = [r for r in reports if r["settings"]["via"] != REST]
    assert [r["setup"]["funded_minor"] for r in grpc] == [r["setup"]["funded_minor"] for r in rest]

    compared = edge.compare(reports)
    assert set(compared) == {BROWSE, STEADY_SAGA}
    assert set(compared[BROWSE]["rpcs"]) == {"GetProduct"}
    assert set(compared[STEADY_SAGA]["rpcs"]) >= {"PlaceOrder", "WatchOrder", edge.SAGA}
    for found in compared.values():
        assert found["audit_ok"] and found["pairs"] == 1
        for row in found["rpcs"].values():
            assert row["rest"]["qps"] > 0 and row["grpc"]["qps"] > 0
            assert all(v is not None for v in row["added_ms"].values())
    assert len(edge.lines(compared)) == 4 + 2  # a line per RPC, one per scenario

    # And afterwards, with everything settled, the audit of the whole system is clean.
    after = await audit(target.audit_dsns, settle=10)
    assert after.ok, after.render()

"""`make bench-edge` end to end, briefly: both tools run against both edges, the loadgen's
pairs compared, the JSON report written. The figures of so short a run mean nothing and
are not judged (docs/performance.md reports a real run's); that each was measured is."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from devstack.stack import Stack
from shared.settings import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_make_bench_edge_measures_both_edges_and_writes_its_report(stack: Stack) -> None:
    # The test stack is up (the fixture), so the bench runs on it and leaves it up.
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "bench-edge",
            f"BENCH_EDGE_ARGS=--quick --profile {stack.profile.name}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "make bench-edge " in (REPO_ROOT / "docs" / "performance.md").read_text()
    lines = done.stdout.splitlines()
    saturated = [line for line in lines if " at saturation (c=" in line]
    assert {line.split()[1] for line in saturated} == {"GetProduct", "GetStock"}, lines
    compared = [line for line in lines if line.startswith("bench-edge: ") and " REST adds " in line]
    names = {" ".join(line.split()[1:3]).rstrip(":") for line in compared}
    assert {"browse GetProduct", "steady-saga PlaceOrder"} <= names, lines
    report_line = next(line for line in lines if line.startswith("bench-edge: report "))
    report = json.loads(Path(report_line.removeprefix("bench-edge: report ")).read_text())
    assert report["loadgen_ok"] and report["gateway"]["rate_limit"] == "off (env)"
    for pair in report["capacity"].values():
        assert pair["grpc"]["rps"] > 0 and pair["rest"]["rps"] > 0, pair
        assert pair["grpc"]["p50_ms"] is not None and pair["rest"]["p50_ms"] is not None
    for scenario in report["open_loop"].values():
        assert scenario["audit_ok"] and scenario["gateway_rate_limited"] == 0, scenario
        for row in scenario["rpcs"].values():
            assert row["grpc"]["qps"] > 0 and row["rest"]["qps"] > 0, row

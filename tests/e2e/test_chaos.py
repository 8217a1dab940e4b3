"""`make chaos PROFILE=short` inside `make test`: the short fault schedule against a
system of two supervised instances per service on the test stack, judged by its goals.

It fails when the system misses a chaos goal (docs/chaos.md: the audit, no order timed out,
at most 1 % of arrivals failed, the flash sale sells exactly its stock, every fault
recovered within 5 s), the same verdict `make chaos` exits on, and when the runner
itself did not do its job (a fault not injected, a report incomplete).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.launcher import REPO_ROOT, SERVICES
from devstack.stack import Stack
from loadgen.dev_target import stack_target
from perf.chaos.__main__ import REPLICAS, instances_of
from perf.chaos.runner import run_chaos
from perf.chaos.schedule import SHORT
from tests.e2e.conftest import running_system
from tests.support.make import make_dry_run
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def test_the_short_chaos_profile_meets_the_goals(
    stack: Stack, keys: TestKeys, tmp_path: Path
) -> None:
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    replicas = dict.fromkeys(SERVICES, REPLICAS)
    async with running_system(stack, keys, replicas=replicas, supervise=True) as system:
        target = stack_target(stack, system.clients, system.directory)
        assert all(len(target.instances()[s]) == REPLICAS for s in SERVICES)
        result = await run_chaos(
            SHORT, target, stack, lambda: instances_of(stack), tmp_path, say=say
        )

    report = json.loads(result.json_path.read_text())
    # The instrument: every fault injected, timed and healed; the report complete.
    assert [f["label"] for f in report["faults"]] == [s.label for s in SHORT.faults]
    for fault in report["faults"]:
        assert fault["error"] is None, fault
        assert 0 <= fault["start"] <= fault["healed"], fault
    assert report["arrivals"]["scheduled"] == round(SHORT.rate * SHORT.duration)
    assert report["flash_sale"]["stock"] == SHORT.stock
    assert report["outbox_backlog_peak"]["total"] is not None
    assert result.png_path.read_bytes().startswith(PNG_MAGIC)
    assert lines[-1] == result.line and result.line.startswith("chaos: faults 2 · ")
    # The system: the goals, as `make chaos` judges them.
    missed = {n: g for n, g in report["goals"].items() if not g["met"]}
    assert result.ok and not missed, f"{result.line}; missed: {missed}"


def test_make_chaos_takes_a_profile_and_a_rate() -> None:
    assert make_dry_run("chaos").endswith("-m perf.chaos --profile full")
    assert make_dry_run("chaos", "PROFILE=short").endswith("-m perf.chaos --profile short")
    assert make_dry_run("chaos", "RATE=50").endswith("-m perf.chaos --profile full --rate 50")
    page = (REPO_ROOT / "docs" / "chaos.md").read_text()
    assert "make chaos RATE=50 " in page and "tests/e2e/test_chaos.py" in page
    # A rate that is no rate is refused before anything starts.
    refused = subprocess.run(
        [sys.executable, "-m", "perf.chaos", "--rate", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "--rate is arrivals per second" in refused.stderr

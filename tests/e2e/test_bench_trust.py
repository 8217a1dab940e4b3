"""`make bench-trust` end to end, briefly: both stacks measured in turn, every figure
printed beside its baseline and the JSON report written. The figures of so short a run
mean nothing and are not judged; that each was measured on each stack is."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_make_bench_trust_measures_off_and_on_and_writes_its_report() -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "bench-trust", "BENCH_TRUST_ARGS=--quick"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    costs = [line for line in lines if line.startswith("bench-trust: ") and ": off " in line]
    assert len(costs) == 7, lines
    assert not any("NOT MEASURED" in line for line in costs), costs
    report_line = next(line for line in lines if line.startswith("bench-trust: report "))
    report = json.loads(Path(report_line.removeprefix("bench-trust: report ")).read_text())
    assert report["order"] == ["bench-plain", "bench"]
    # Every figure measured on both stacks, the same figures.
    assert set(report["off"]) == set(report["on"])
    assert all(value is not None for value in (*report["off"].values(), *report["on"].values()))

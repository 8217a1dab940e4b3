"""The recording and alerting rules parse, and behave as their rules_test.yml says.

One rules file serves `make run`'s Prometheus and the cluster's
(deploy/k8s/observability/rules.yml); its tests sit beside it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack.install import ensure_promtool
from devstack.prometheus import RULES_FILE

RULES = RULES_FILE
RULES_TEST = RULES_FILE.with_name("rules_test.yml")


@pytest.fixture(scope="module")
def promtool() -> Path:
    return ensure_promtool()


@pytest.mark.parametrize(
    "args", [("check", "rules", RULES), ("test", "rules", RULES_TEST)], ids=["check", "test"]
)
def test_promtool(promtool: Path, args: tuple[str, str, Path]) -> None:
    res = subprocess.run(
        [str(promtool), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{res.stdout}{res.stderr}"

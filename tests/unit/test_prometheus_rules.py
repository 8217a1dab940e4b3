"""The recording and alerting rules parse, and behave as infra/prometheus/rules_test.yml says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack.config import INFRA_DIR
from devstack.install import ensure_promtool

RULES = INFRA_DIR / "prometheus" / "rules.yml"
RULES_TEST = INFRA_DIR / "prometheus" / "rules_test.yml"


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

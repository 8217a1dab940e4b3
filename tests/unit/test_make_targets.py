"""The Makefile: `make help` lists every target, and every `python -m` it runs exists."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess

from devstack.config import REPO_ROOT

MAKEFILE = REPO_ROOT / "Makefile"


def phony_targets() -> set[str]:
    return {
        name
        for line in MAKEFILE.read_text().splitlines()
        if line.startswith(".PHONY:")
        for name in line.removeprefix(".PHONY:").split()
    }


def test_help_lists_every_target() -> None:
    # Under a parent make (CI's `make test`) MAKEFLAGS would add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    listed = {line.split()[0] for line in shown.splitlines() if line.strip()}
    assert phony_targets() - listed == set()
    assert "k8s-real-check" in listed


def test_every_module_the_makefile_runs_exists() -> None:
    modules = set(re.findall(r"\$\(PY\) -m ([\w.]+)", MAKEFILE.read_text()))
    assert "devstack.run" in modules
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert missing == []

"""What a `make` target would run, read without running it (`make -n`)."""

from __future__ import annotations

import os
import subprocess

from devstack.launcher import REPO_ROOT


def make_dry_run(target: str, *args: str) -> str:
    """The last command `make <target> <args>` would run."""
    # Under a parent make (CI's `make test`) MAKEFLAGS would add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", target, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    return dry_run.stdout.rstrip().splitlines()[-1]

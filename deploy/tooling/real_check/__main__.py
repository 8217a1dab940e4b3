"""`python -m deploy.tooling.real_check`: see check.py; `make k8s-real-check` runs it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from deploy.tooling import k8s
from deploy.tooling.real_check.check import run_check


def main(
    work: Annotated[Path, typer.Option(help="the node's folder")] = k8s.REPO_ROOT
    / ".stack"
    / "k8s-real-check",
    reports: Annotated[Path, typer.Option(help="where the load Job's report goes")] = k8s.REPO_ROOT
    / "reports",
    profile: Annotated[str, typer.Option(help="the load Job's profile")] = "smoke",
    load_args: Annotated[str, typer.Option(help="more load harness options")] = "",
    keep: Annotated[bool, typer.Option(help="leave the node up after the check")] = False,
) -> None:
    """Run the manifests' containers on a real single-node Kubernetes here; exit 1 on a miss."""
    if os.geteuid() != 0:
        raise typer.BadParameter("the node's containerd, kubelet and kube-proxy need root")
    raise typer.Exit(run_check(work, reports, profile, load_args, keep))


if __name__ == "__main__":
    typer.run(main)

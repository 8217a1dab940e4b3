"""`make up`, `make load-k8s` and `make down-k8s`, as docs/kubernetes.md shows them, on a machine
with neither kind nor minikube (this one): each refuses with one clear line, no trace.

Where kind or minikube is installed these would act on a real cluster, so they skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from deploy.tooling.k8s import REPO_ROOT

pytestmark = pytest.mark.skipif(
    bool(shutil.which("kind") or shutil.which("minikube")),
    reason="a cluster tool is installed: these commands would use it",
)


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "K8S"} | env
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "command", [["up"], ["load-k8s", "PROFILE=smoke"], ["down-k8s"]], ids=" ".join
)
def test_without_a_cluster_tool_the_cluster_commands_say_so(command: list[str]) -> None:
    result = make(*command)
    assert result.returncode != 0
    assert "k8s: neither kind nor minikube is installed" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_k8s_names_a_tool_that_is_not_here() -> None:
    result = make("up", K8S="minikube")
    assert result.returncode != 0
    assert "k8s: K8S=minikube, but minikube is not installed" in result.stderr
    result = make("up", K8S="docker-desktop")
    assert "k8s: K8S is kind or minikube, not 'docker-desktop'" in result.stderr

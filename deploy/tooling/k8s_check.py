"""`make k8s-check`, the static half: render, schema-check and lint the manifests.

No cluster is needed. Both overlays and the two Jobs `make up` and `make load-k8s`
add are rendered with kustomize, checked strictly against the OpenAPI schemas of
one named Kubernetes version (kubernetes-validate, which bundles them), and linted
with kube-score, the seccomp check included. The cross-checks against the code are
tests (tests/k8s/test_manifests.py), and so is the image (tests/k8s/test_image.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from deploy.tooling.k8s import K8S_DIR, REPO_ROOT

KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ("kind", "minikube")
JOBS = ("smoke", "trust-check", "load")
KUBE_SCORE_IGNORED = {
    # Images are loaded into the nodes (kind load, minikube image load): there is no
    # registry to pull from, so IfNotPresent is the only policy that works.
    "container-image-pull-policy": "no registry: the image is loaded into the nodes",
    # Replicas are spread by topologySpreadConstraints (kube-score checks those), which
    # still schedule on a one-node minikube, where a hard anti-affinity would not.
    "deployment-has-host-podantiaffinity": "topology spread instead",
    "statefulset-has-host-podantiaffinity": "topology spread instead",
}


def render(path: Path) -> str:
    return subprocess.run(
        ["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True
    ).stdout


def rendered() -> dict[str, str]:
    """overlay name -> its objects plus the Jobs that run beside it, as one YAML stream."""
    jobs = "---\n".join(render(K8S_DIR / "jobs" / job) for job in JOBS)
    return {name: render(K8S_DIR / "overlays" / name) + "---\n" + jobs for name in OVERLAYS}


def objects(stream: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(stream) if doc]


def validate(files: list[Path]) -> bool:
    return (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "kubernetes_validate",
                "--strict",
                "--quiet",
                "-k",
                KUBERNETES_VERSION,
                *map(str, files),
            ],
            check=False,
        ).returncode
        == 0
    )


def lint(kube_score: Path, files: list[Path]) -> bool:
    argv = [
        str(kube_score),
        "score",
        "--kubernetes-version",
        f"v{KUBERNETES_VERSION[:4]}",
        "--enable-optional-test",
        "container-seccomp-profile",
        "--ignore-test",
        ",".join(KUBE_SCORE_IGNORED),
        "--output-format",
        "ci",
        *map(str, files),
    ]
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    problems = [
        line for line in result.stdout.splitlines() if not line.startswith(("[OK]", "[SKIPPED]"))
    ]
    for line in problems:
        print(f"  {line}")
    return result.returncode == 0 and not problems


def main(
    kube_score: Annotated[Path, typer.Option(help="the kube-score binary")] = REPO_ROOT
    / ".stack/tools/bin/kube-score",
    out: Annotated[Path, typer.Option(help="where the rendered YAML goes")] = REPO_ROOT
    / ".stack/k8s-check",
) -> None:
    """Render both overlays, schema-check them strictly, lint them; exit 1 on any finding."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, stream in rendered().items():
        path = out / f"{name}.yaml"
        path.write_text(stream)
        files.append(path)
        kinds = Counter(o["kind"] for o in objects(stream))
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        print(f"k8s-check: overlays/{name} + jobs: {sum(kinds.values())} objects ({summary})")
    schema_ok = validate(files)
    print(
        f"k8s-check: schemas of Kubernetes {KUBERNETES_VERSION} (strict): "
        f"{'ok' if schema_ok else 'FAILED'}"
    )
    lint_ok = lint(kube_score, files)
    print(
        f"k8s-check: kube-score ({len(KUBE_SCORE_IGNORED)} checks waived, "
        f"see deploy/tooling/k8s_check.py): {'ok' if lint_ok else 'FAILED'}"
    )
    if not (schema_ok and lint_ok):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)

"""`make k8s-cluster-check`: the manifests through a real Kubernetes control plane.

kind and minikube cannot run here, but a control plane can: etcd 3.6, kube-apiserver,
kube-controller-manager and kube-scheduler, all built from the Go module proxy
(deploy/k8s/cluster-check/), and kwok, whose fake nodes take the pods the scheduler
gives them and report them running. So this shows what the API server and the
controllers make of the manifests; no container runs (the image's own test does that):

1. a server-side dry-run apply of each overlay: the real admission chain, including
   Pod Security "restricted", which the namespace enforces;
2. the Secrets, created by the same code as `make up`, then the overlay applied;
3. every Deployment Available and every StatefulSet ready on three fake nodes, the
   PVCs bound, the HPAs and PDBs accepted, and the Jobs' pods admitted;
4. Prometheus' ServiceAccount allowed pod discovery in the namespace and nothing else,
   by the API server's own authorizer (RBAC).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from deploy.tooling import k8s

BIN = k8s.REPO_ROOT / ".stack" / "tools" / "bin"
FAKE_NODES = ("kwok-node-0", "kwok-node-1", "kwok-node-2")
# What the StatefulSets claim; a fake cluster has no provisioner, so they are made here.
VOLUMES = {
    "data-postgres-0": "2Gi",
    "data-etcd-0": "1Gi",
    "data-etcd-1": "1Gi",
    "data-etcd-2": "1Gi",
    "data-kafka-0": "4Gi",
}
TOKEN = "shop-cluster-check"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(message: str) -> None:
    print(f"k8s-cluster-check: {message}", flush=True)


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok."""

    def __init__(self, work: Path, kwok_stages: Path) -> None:
        self.work = work
        # kwok's own "fast" stages: nodes ready at once, pods running at once, a Job's
        # pods completed, deleted pods gone.
        self.kwok_stages = kwok_stages
        self.logs = work / "logs"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.api_port = free_port()
        self.kubeconfig = work / "kubeconfig"

    def start(self, name: str, argv: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def up(self) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.logs.mkdir(parents=True)
        etcd_port, peer_port = free_port(), free_port()
        self.start(
            "etcd",
            [
                str(BIN / "etcd-3.6"),
                f"--data-dir={self.work / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            ],
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa_key = self.work / "sa.key"
        sa_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        tokens = self.work / "tokens.csv"
        tokens.write_text(f'{TOKEN},admin,admin,"system:masters"\n')
        self.start(
            "kube-apiserver",
            [
                str(BIN / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.work / 'pki'}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/16",
            ],
        )
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: check\n"
            f"clusters: [{{name: check, cluster: {{server: 'https://127.0.0.1:{self.api_port}', "
            "insecure-skip-tls-verify: true}}]\n"
            f"users: [{{name: admin, user: {{token: {TOKEN}}}}}]\n"
            "contexts: [{name: check, context: {cluster: check, user: admin}}]\n"
        )
        self.wait_for_api()
        self.start(
            "kube-controller-manager",
            [
                str(BIN / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--service-account-private-key-file={sa_key}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--controllers=*",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        self.start(
            "kube-scheduler",
            [
                str(BIN / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        stages = self.work / "kwok-stages.yaml"
        stages.write_text(
            k8s.run(["kubectl", "kustomize", str(self.kwok_stages)], capture=True).stdout
        )
        self.start(
            "kwok",
            [
                str(BIN / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )

    def wait_for_api(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kubectl("get", "--raw=/readyz", quiet=True).ok:
                return
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(1)
        raise k8s.ClusterError(f"kube-apiserver not ready; see {self.logs}")

    def kubectl(self, *args: str, quiet: bool = False, stdin: str | None = None) -> k8s.Ran:
        return k8s.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            check=not quiet,
            quiet=quiet,
            stdin=stdin,
            capture=not quiet,
        )

    def down(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def control_plane(work: Path, kwok_stages: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(work, kwok_stages)
    try:
        plane.up()
        yield plane
    finally:
        plane.down()


def fake_nodes() -> str:
    docs = []
    for name in FAKE_NODES:
        docs.append(f"""apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: {name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {{cpu: "8", memory: 16Gi, pods: "110", ephemeral-storage: 100Gi}}
  capacity: {{cpu: "8", memory: 16Gi, pods: "110", ephemeral-storage: 100Gi}}
""")
    return "---\n".join(docs)


def volumes() -> str:
    return "---\n".join(
        f"""apiVersion: v1
kind: PersistentVolume
metadata:
  name: {claim}
spec:
  capacity: {{storage: {size}}}
  accessModes: [ReadWriteOnce]
  claimRef: {{namespace: {k8s.NAMESPACE}, name: {claim}}}
  hostPath: {{path: /tmp/{claim}}}
"""
        for claim, size in VOLUMES.items()
    )


# A pod the "restricted" profile must refuse (a plain container: may run as root, keeps
# its capabilities, no seccomp): proof that admission really enforces it.
FORBIDDEN_POD = f"""apiVersion: v1
kind: Pod
metadata: {{name: plain, namespace: {k8s.NAMESPACE}}}
spec:
  containers: [{{name: c, image: busybox}}]
"""


def dry_run(plane: ControlPlane, path: Path) -> None:
    """Server-side: schemas, defaults and every admission plugin, nothing stored."""
    result = subprocess.run(
        [
            "kubectl",
            f"--kubeconfig={plane.kubeconfig}",
            "apply",
            "--dry-run=server",
            "-k",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    warnings = [line for line in result.stderr.splitlines() if "Warning" in line]
    if result.returncode != 0 or warnings:
        raise k8s.ClusterError(f"dry run of {path} refused:\n{result.stderr}")
    created = result.stdout.count("(server dry run)")
    say(f"server-side dry run of {path.relative_to(k8s.K8S_DIR)}: {created} objects admitted")


def check(work: Path, overlay: str, kwok_stages: Path) -> None:
    with control_plane(work, kwok_stages) as plane:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        kubectl = k8s.Kubectl("check")
        say(f"control plane up on 127.0.0.1:{plane.api_port}; logs in {plane.logs}")
        plane.kubectl("apply", "-f", "-", stdin=fake_nodes())
        kubectl("apply", "-f", str(k8s.K8S_DIR / "base" / "namespace.yaml"), capture=True)
        refused = subprocess.run(
            ["kubectl", "apply", "--dry-run=server", "-f", "-"],
            input=FORBIDDEN_POD,
            capture_output=True,
            text=True,
            check=False,
        )
        if refused.returncode == 0 or "violates PodSecurity" not in refused.stderr:
            raise k8s.ClusterError("a plain pod was not refused: is Pod Security on?")
        say('Pod Security "restricted" is enforced (a plain pod was refused)')
        for name in k8s.CLUSTERS:
            dry_run(plane, k8s.K8S_DIR / "overlays" / name)
        for job in ("smoke", "trust-check", "load"):
            dry_run(plane, k8s.K8S_DIR / "jobs" / job)
        plane.kubectl("apply", "-f", "-", stdin=volumes())
        # What `make up` does after loading the image, on the fake nodes (whose pods run
        # no container, so they have no log; kwok completes a Job's pods).
        k8s.deploy(kubectl, overlay, k8s.same_tag("dev"), work / "state", smoke_log=False)
        report(kubectl)
        prometheus_access(kubectl)


def available(kubectl: k8s.Kubectl) -> dict[str, int]:
    out = kubectl(
        "get",
        "deployments",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.availableReplicas} {end}",
        capture=True,
    ).stdout
    return {name: int(n or 0) for name, _, n in (p.partition("=") for p in out.split())}


def report(kubectl: k8s.Kubectl, timeout: float = 120) -> None:
    # The autoscalers lift product and order to their minimum of two (no metrics here);
    # the gateway runs two as well.
    wanted = {**{d: 2 for d in k8s.DEPLOYMENTS}, "shopctl": 1, "zipkin": 1, "prometheus": 1}
    deadline = time.monotonic() + timeout
    while (counts := available(kubectl)) != wanted and time.monotonic() < deadline:
        time.sleep(3)
    say(f"deployments available: {' '.join(f'{k}={v}' for k, v in sorted(counts.items()))}")
    placed = kubectl(
        "get", "pods", "-o", "jsonpath={range .items[*]}{.spec.nodeName} {end}", capture=True
    ).stdout.split()
    spread = {node: placed.count(node) for node in sorted(set(placed))}
    say(f"pods per fake node: {spread}")
    claims = kubectl(
        "get", "pvc", "-o", "jsonpath={range .items[*]}{.status.phase} {end}", capture=True
    ).stdout.split()
    say(f"volume claims: {len(claims)}, {claims.count('Bound')} bound")
    jobs = kubectl(
        "get", "jobs", "-o", "jsonpath={range .items[*]}{.metadata.name} {end}", capture=True
    ).stdout.split()
    say(f"jobs complete: {' '.join(sorted(jobs))} (on fake nodes: admitted, not run)")
    if counts != wanted or claims.count("Bound") != len(VOLUMES):
        raise k8s.ClusterError(f"wanted {wanted}, available {counts}; claims {claims}")


# What Prometheus' account may do (deploy/k8s/observability/prometheus.yaml): watch the
# pods of its namespace for discovery, and nothing more.
PROMETHEUS_ACCESS = {
    ("list", "pods"): True,
    ("watch", "pods"): True,
    ("get", "pods"): True,
    ("list", "pods", "--all-namespaces"): False,
    ("delete", "pods"): False,
    ("create", "pods/exec"): False,
    ("get", "secrets"): False,
    ("list", "endpoints"): False,
}


def prometheus_access(kubectl: k8s.Kubectl) -> None:
    account = f"system:serviceaccount:{k8s.NAMESPACE}:prometheus"
    wrong = []
    for args, wanted in PROMETHEUS_ACCESS.items():
        # Exit 0 and "yes" when allowed, exit 1 and "no" when not.
        answer = kubectl("auth", "can-i", *args, f"--as={account}", check=False, capture=True)
        if answer.ok != wanted:
            wrong.append(f"{' '.join(args)}: {answer.stdout.strip() or 'no'}")
    if wrong:
        raise k8s.ClusterError(f"prometheus's RBAC: {'; '.join(wrong)}")
    say(f"prometheus's account: pod discovery in {k8s.NAMESPACE} only, as its Role says")
    say("passed")


def main(
    kwok_stages: Annotated[Path, typer.Option(help="kwok's kustomize/stage/fast folder")],
    overlay: Annotated[str, typer.Option(help="kind or minikube")] = "kind",
    work: Annotated[Path, typer.Option()] = k8s.REPO_ROOT / ".stack" / "k8s-cluster-check",
) -> None:
    """Apply the overlay to a real control plane with fake nodes; every workload must run."""
    try:
        check(work, overlay, kwok_stages)
    except k8s.ClusterError as error:
        print(f"k8s-cluster-check: FAILED: {error}", file=sys.stderr)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    typer.run(main)

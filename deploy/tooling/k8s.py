"""The cluster path: `make up`, `make load-k8s`, `make down-k8s` on kind or minikube.

``python -m deploy.tooling.k8s up`` creates the cluster if it is missing, builds the images,
loads them into the cluster, creates the Secrets from the project's own CA, applies
the overlay, waits for the infrastructure, the services and the gateway, runs the smoke
Job and prints how to reach the system (the storefront through a port-forward).
Everything it makes locally (the CA, the signing key, the database passwords, the OAuth2
clients' secrets, the kustomizations that pin the image tags) lives in ``.stack/k8s/``;
nothing secret is ever committed. Safe to repeat.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from deploy.tooling.image import STAGES, build, content_tags
from devstack.containers import Engine, ImageError
from ops.oauth_clients import STOREFRONT, oauth_clients, secret_file, write_clients_file
from ops.seed import ADMIN, CUSTOMER
from ops.trust import rights
from pki.authority import ensure_authority, keystore_file
from pki.identities import EDGE, ETCD_ROOT, KAFKA, POSTGRES, SERVICES
from shared.auth.keys import generate_keypair
from shared.tls import ETCD, OPERATOR, ca_file, cert_file, key_file

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
STATE_DIR = REPO_ROOT / ".stack" / "k8s"
NAMESPACE = "shop"
CLUSTER_NAME = "shop"
CLUSTERS = ("kind", "minikube")
INFRASTRUCTURE = ("postgres", "etcd", "kafka")
# The Deployments the system serves from: the five services, then the edge.
DEPLOYMENTS = (*SERVICES, *EDGE)
# Where a browser opens the storefront: `kubectl port-forward svc/gateway 8080:8080`. The
# gateway's SHOP_GATEWAY_PUBLIC_URL, the storefront's redirect URI and the tokens' issuer.
PUBLIC_URL = "http://localhost:8080"
# Where the user pods mount shop-oauth-clients, and the gateway's pods their one secret.
OAUTH_MOUNT = Path("/etc/shop/oauth")
# The overlay's Jobs; each is safe to repeat, and made again by every `make up`.
JOBS = ("etcd-auth", "postgres-roles", "kafka-topics", "config-defaults", "seed")
ROLLOUT_TIMEOUT = "600s"
# The image tags `make up` deployed; `make load-k8s` runs its Job on the same images.
DEPLOYED_TAGS = STATE_DIR / "deployed-tags.json"
# image (localhost/shop, -ops, -loadgen) -> its tag, as `make up` deploys them.
Tags = Mapping[str, str]


class ClusterError(RuntimeError):
    pass


# --- the Secrets: what the pods mount, made from files only this machine has ---------------


@dataclass(frozen=True)
class SecretSpec:
    name: str
    # key in the Secret -> the local file it comes from
    files: dict[str, Path] = field(default_factory=dict)


def secret_specs(state: Path = STATE_DIR) -> list[SecretSpec]:
    """Every Secret the manifests name (the cross-check in tests/k8s holds them to this)."""
    tls = state / "tls"

    def tls_secret(identity: str) -> SecretSpec:
        files = {
            "ca.pem": ca_file(tls),
            f"{identity}.pem": cert_file(tls, identity),
            f"{identity}-key.pem": key_file(tls, identity),
        }
        if identity == KAFKA:  # the broker reads its key and chain from one PEM file
            files[keystore_file(tls, identity).name] = keystore_file(tls, identity)
        return SecretSpec(f"shop-tls-{identity}", files)

    return [
        # The administrator's password: the PostgreSQL pod and the Job that makes the roles.
        SecretSpec("shop-postgres", {"password": postgres_password(state, rights.PG_ADMIN)}),
        # Each service's own role, and the gateway's; only its pods (and the roles Job, and
        # the attack battery for the roles it plays) mount it.
        *(
            SecretSpec(f"shop-postgres-{service}", {"password": postgres_password(state, role)})
            for service, role in rights.PG_ROLES.items()
        ),
        SecretSpec(
            "shop-postgres-audit", {"password": postgres_password(state, rights.PG_AUDITOR)}
        ),
        SecretSpec("shop-jwt-bootstrap", {"private.pem": state / "jwt" / "private.pem"}),
        # The user service's OAuth2 clients (clients.json) and every confidential one's
        # secret, beside it where the file says; the gateway's pods, the storefront's alone.
        SecretSpec(
            "shop-oauth-clients",
            {
                "clients.json": oauth_clients_file(state),
                **{
                    client.client_id: secret_file(oauth_secrets_dir(state), client.client_id)
                    for client in oauth_clients(PUBLIC_URL)
                    if client.confidential
                },
            },
        ),
        SecretSpec(
            "shop-oauth-storefront", {"secret": secret_file(oauth_secrets_dir(state), STOREFRONT)}
        ),
        *(
            tls_secret(identity)
            for identity in (*SERVICES, *EDGE, OPERATOR, ETCD, ETCD_ROOT, KAFKA, POSTGRES)
        ),
    ]


def postgres_password(state: Path, role: str) -> Path:
    return state / "postgres" / role


def oauth_clients_file(state: Path) -> Path:
    return state / "oauth" / "clients.json"


def oauth_secrets_dir(state: Path) -> Path:
    return state / "oauth" / "secrets"


def ensure_local_secrets(state: Path = STATE_DIR) -> None:
    """The cluster's own CA and certificates, signing key, database passwords and the
    OAuth2 clients' secrets (the clients file naming them where the user pods mount them)."""
    ensure_authority(state / "tls")
    generate_keypair(state / "jwt")
    write_clients_file(
        oauth_clients_file(state), PUBLIC_URL, oauth_secrets_dir(state), seen_at=OAUTH_MOUNT
    )
    (state / "postgres").mkdir(mode=0o700, parents=True, exist_ok=True)
    for role in (rights.PG_ADMIN, rights.PG_AUDITOR, *rights.PG_ROLES.values()):
        password = postgres_password(state, role)
        if not password.exists():
            # Hex: safe inside the postgresql:// DSNs the manifests build from it.
            password.write_text(secrets.token_hex(24))
            password.chmod(0o600)


# --- kustomizations that pin the image tag ---------------------------------------------------


def same_tag(tag: str) -> dict[str, str]:
    """Every image at ``tag``: the manifests' own ``dev``, where no image is loaded."""
    return dict.fromkeys(STAGES, tag)


def pinned_kustomization(target: Path, source: Path, tags: Tags, extra: str = "") -> Path:
    """``target/kustomization.yaml``: ``source`` with each image at its tag in ``tags``."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "kustomization.yaml").write_text(
        "# Made by deploy/tooling/k8s.py on every run; an image's tag is its build's content id.\n"
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources:\n"
        f"  - {os.path.relpath(source, target)}\n"
        "images:\n"
        + "".join(f"  - name: {image}\n    newTag: {tag}\n" for image, tag in tags.items())
        + extra
    )
    return target


def load_settings(profile: str, args: str) -> str:
    return (
        "configMapGenerator:\n"
        "  - name: load-settings\n"
        "    behavior: replace\n"
        "    literals:\n"
        f"      - LOAD_PROFILE={profile}\n"
        f"      - LOAD_ARGS={args}\n"
    )


# --- the cluster -----------------------------------------------------------------------------


def choose_cluster(requested: str | None, which: Sequence[str] = CLUSTERS) -> str:
    """K8S=kind|minikube wins; else whichever is installed, kind first."""
    if requested:
        if requested not in CLUSTERS:
            raise ClusterError(f"K8S is kind or minikube, not {requested!r}")
        if not shutil.which(requested):
            raise ClusterError(f"K8S={requested}, but {requested} is not installed")
        return requested
    for name in which:
        if shutil.which(name):
            return name
    raise ClusterError("neither kind nor minikube is installed (see deploy/k8s/README.md)")


@dataclass
class Cluster:
    kind: str  # "kind" or "minikube"
    created_marker: Path = STATE_DIR / "created-cluster"

    @property
    def context(self) -> str:
        return f"kind-{CLUSTER_NAME}" if self.kind == "kind" else CLUSTER_NAME

    def exists(self) -> bool:
        if self.kind == "kind":
            out = run(["kind", "get", "clusters"], capture=True).stdout
            return CLUSTER_NAME in out.split()
        return run(["minikube", "status", "-p", CLUSTER_NAME], check=False, quiet=True).ok

    def ensure(self) -> None:
        if self.exists():
            say(f"cluster: {self.kind} cluster {CLUSTER_NAME!r} is there")
            return
        say(f"cluster: creating the {self.kind} cluster {CLUSTER_NAME!r}")
        if self.kind == "kind":
            config = K8S_DIR / "overlays" / "kind" / "cluster.yaml"
            run(["kind", "create", "cluster", "--name", CLUSTER_NAME, "--config", str(config)])
        else:
            run(["minikube", "start", "-p", CLUSTER_NAME, "--cpus", "2", "--memory", "6g"])
        self.created_marker.parent.mkdir(parents=True, exist_ok=True)
        self.created_marker.write_text(self.kind)

    def load_image(self, engine: Engine, ref: str) -> None:
        """Into the nodes' container runtime: no registry involved."""
        say(f"image: loading {ref} into the {self.kind} cluster")
        with tempfile.TemporaryDirectory(prefix="shop-image-") as tmp:
            archive = Path(tmp) / "shop.tar"
            engine.run("save", "--output", str(archive), ref)
            if self.kind == "kind":
                run(["kind", "load", "image-archive", str(archive), "--name", CLUSTER_NAME])
            else:
                run(["minikube", "-p", CLUSTER_NAME, "image", "load", str(archive)])

    def delete(self) -> None:
        if self.kind == "kind":
            run(["kind", "delete", "cluster", "--name", CLUSTER_NAME])
        else:
            run(["minikube", "delete", "-p", CLUSTER_NAME])
        self.created_marker.unlink(missing_ok=True)


@dataclass(frozen=True)
class Ran:
    ok: bool
    stdout: str


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    quiet: bool = False,
    capture: bool = False,
    stdin: str | None = None,
) -> Ran:
    result = subprocess.run(
        list(argv),
        input=stdin,
        text=True,
        stdout=subprocess.PIPE if capture else (subprocess.DEVNULL if quiet else None),
        stderr=subprocess.DEVNULL if quiet else None,
        check=False,
    )
    if check and result.returncode != 0:
        raise ClusterError(f"`{' '.join(argv)}` failed (exit {result.returncode})")
    return Ran(result.returncode == 0, result.stdout or "")


def say(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class Kubectl:
    context: str

    def __call__(
        self,
        *args: str,
        check: bool = True,
        quiet: bool = False,
        capture: bool = False,
        stdin: str | None = None,
    ) -> Ran:
        argv = ["kubectl", "--context", self.context, "-n", NAMESPACE, *args]
        return run(argv, check=check, quiet=quiet, capture=capture, stdin=stdin)

    def apply_secrets(self, specs: Sequence[SecretSpec]) -> None:
        for spec in specs:
            manifest = run(
                [
                    "kubectl",
                    "create",
                    "secret",
                    "generic",
                    spec.name,
                    "-n",
                    NAMESPACE,
                    *(f"--from-file={key}={path}" for key, path in spec.files.items()),
                    "--dry-run=client",
                    "-o",
                    "yaml",
                ],
                capture=True,
            ).stdout
            self("apply", "-f", "-", stdin=manifest, capture=True)

    def wait_job(self, name: str, timeout: float) -> bool:
        """True when the Job completed, False when it failed; ClusterError on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self(
                "get",
                "job",
                name,
                "-o",
                "jsonpath={range .status.conditions[*]}{.type}={.status};{end}",
                capture=True,
                check=False,
            ).stdout
            if job_finished(out) is not None:
                return bool(job_finished(out))
            time.sleep(2)
        raise ClusterError(f"job/{name} did not finish within {timeout:g}s")


def job_finished(conditions: str) -> bool | None:
    """From ``Type=Status;`` pairs: True complete, False failed, None still running."""
    true = {pair.split("=")[0] for pair in conditions.split(";") if pair.endswith("=True")}
    if "Complete" in true:
        return True
    if "Failed" in true:
        return False
    return None


# --- the commands ----------------------------------------------------------------------------


def up(requested: str | None) -> None:
    cluster = Cluster(choose_cluster(requested))
    cluster.ensure()
    engine = Engine.detect()
    tags = content_tags(engine, build(engine))
    for image, tag in tags.items():
        cluster.load_image(engine, f"{image}:{tag}")
    deploy(Kubectl(cluster.context), cluster.kind, tags)
    DEPLOYED_TAGS.write_text(json.dumps(tags, indent=2) + "\n")
    print_access(cluster)


def deploy(
    kubectl: Kubectl, overlay: str, tags: Tags, state: Path = STATE_DIR, smoke_log: bool = True
) -> None:
    """Secrets, the overlay at ``tags``, the rollouts in order, then the smoke Job.

    `make up` runs this on kind or minikube; `make k8s-cluster-check` on its own control
    plane with fake nodes.
    """
    say(f"secrets: from the project's own CA in {state} (never committed)")
    ensure_local_secrets(state)
    kubectl("apply", "-f", str(K8S_DIR / "base" / "namespace.yaml"), capture=True)
    kubectl.apply_secrets(secret_specs(state))

    # Jobs cannot be changed in place; they are made again (each is safe to repeat).
    kubectl("delete", "job", *JOBS, "smoke", "--ignore-not-found", capture=True)
    target = pinned_kustomization(state / "deploy", K8S_DIR / "overlays" / overlay, tags)
    say(f"apply: overlays/{overlay} with {', '.join(f'{i}:{t}' for i, t in tags.items())}")
    kubectl("apply", "-k", str(target), capture=True)

    say("wait: PostgreSQL, etcd, Kafka, their rights, the topics and the config defaults")
    for name in INFRASTRUCTURE:
        kubectl("rollout", "status", f"statefulset/{name}", f"--timeout={ROLLOUT_TIMEOUT}")
    for job in ("etcd-auth", "postgres-roles", "kafka-topics", "config-defaults"):
        if not kubectl.wait_job(job, 600):
            raise ClusterError(f"job/{job} failed: kubectl -n shop logs job/{job}")
    say("wait: the services, then the gateway")
    for deployment in DEPLOYMENTS:
        kubectl("rollout", "status", f"deployment/{deployment}", f"--timeout={ROLLOUT_TIMEOUT}")
    if not kubectl.wait_job("seed", 600):
        raise ClusterError("job/seed failed: kubectl -n shop logs job/seed")

    run_smoke(kubectl, tags, state, smoke_log)
    run_trust_check(kubectl, tags, state, smoke_log)


def run_smoke(kubectl: Kubectl, tags: Tags, state: Path = STATE_DIR, show_log: bool = True) -> None:
    """The smoke Job at ``tags``: the demo customer's order CONFIRMED, the audit clean."""
    say("smoke: the demo customer's order, then the audit")
    _run_check_job(kubectl, "smoke", tags, state, show_log)


def run_trust_check(
    kubectl: Kubectl, tags: Tags, state: Path = STATE_DIR, show_log: bool = True
) -> None:
    """The trust-check Job at ``tags``: every attack on etcd, Kafka and PostgreSQL refused."""
    say("trust-check: forged keys, events and logins against etcd, Kafka and PostgreSQL")
    _run_check_job(kubectl, "trust-check", tags, state, show_log)


def _run_check_job(kubectl: Kubectl, name: str, tags: Tags, state: Path, show_log: bool) -> None:
    kubectl("delete", "job", name, "--ignore-not-found", "--wait=true", capture=True)
    job = pinned_kustomization(state / name, K8S_DIR / "jobs" / name, tags)
    kubectl("apply", "-k", str(job), capture=True)
    passed = kubectl.wait_job(name, 300)
    if show_log or not passed:
        kubectl("logs", f"job/{name}", check=False)
    if not passed:
        raise ClusterError(f"the {name} Job failed (its log is above)")


def print_access(cluster: Cluster) -> None:
    ctx = f"--context {cluster.context} -n {NAMESPACE}"
    tls = STATE_DIR / "tls"
    say(
        f"""
up: the shop runs on the {cluster.kind} cluster {CLUSTER_NAME!r} (namespace {NAMESPACE}).

the storefront, through a port-forward (leave it running), then {PUBLIC_URL}/ in a browser
(demo customer {CUSTOMER[0]} / {CUSTOMER[1]}, admin {ADMIN[0]} / {ADMIN[1]}):
  kubectl {ctx} port-forward svc/gateway 8080:8080

shopctl, inside the cluster (discovery hands out pod IPs, which only the cluster can dial):
  kubectl {ctx} exec deploy/shopctl -- python -m ops.shopctl products
  kubectl {ctx} exec deploy/shopctl -- python -m ops.shopctl place-order --sku DEMO-TSHIRT

grpcurl from this machine, through a port-forward, with the operator certificate:
  kubectl {ctx} port-forward svc/product 50052:50051 &
  .stack/tools/bin/grpcurl -cacert {tls}/ca.pem -cert {tls}/operator.pem \\
      -key {tls}/operator-key.pem -authority product 127.0.0.1:50052 list

the pods, the load harness, and the way back:
  kubectl {ctx} get pods
  make load-k8s PROFILE=smoke
  make down-k8s"""
    )


def load(requested: str | None, profile: str, args: str, reports: Path) -> int:
    cluster = Cluster(choose_cluster(requested))
    if not DEPLOYED_TAGS.exists():
        raise ClusterError("nothing deployed from here yet: run `make up` first")
    tags = json.loads(DEPLOYED_TAGS.read_text())
    return run_load_job(Kubectl(cluster.context), tags, profile, args, reports)


def run_load_job(
    kubectl: Kubectl, tags: Tags, profile: str, args: str, reports: Path, state: Path = STATE_DIR
) -> int:
    """The load generator as job/load at ``tags``; its reports copied to ``reports``."""
    kubectl("delete", "job", "load", "--ignore-not-found", "--wait=true", capture=True)
    job = pinned_kustomization(
        state / "load", K8S_DIR / "jobs" / "load", tags, load_settings(profile, args)
    )
    kubectl("apply", "-k", str(job), capture=True)
    say(f"load-k8s: profile {profile} running as job/load (kubectl -n shop logs -f job/load)")
    kubectl("wait", "--for=condition=Ready", "pod", "-l", "job-name=load", "--timeout=300s")
    pod = kubectl(
        "get",
        "pod",
        "-l",
        "job-name=load",
        "-o",
        "jsonpath={.items[0].metadata.name}",
        capture=True,
    ).stdout.strip()
    while not kubectl(
        "exec", pod, "--", "test", "-e", "/reports/exit-code", check=False, quiet=True
    ).ok:
        time.sleep(3)
    target = reports / f"k8s-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    kubectl("cp", f"{pod}:/reports", str(target))
    kubectl("exec", pod, "--", "touch", "/reports/.collected")
    code = int((target / "exit-code").read_text().strip() or "1")
    kubectl("logs", pod, "--tail=20", check=False)
    say(f"load-k8s: reports in {target}; {'passed' if code == 0 else 'FAILED'}")
    return code


def down(requested: str | None) -> None:
    cluster = Cluster(choose_cluster(requested))
    if cluster.created_marker.exists() and cluster.created_marker.read_text() == cluster.kind:
        say(f"down: deleting the {cluster.kind} cluster {CLUSTER_NAME!r} that `make up` created")
        cluster.delete()
        return
    say(f"down: deleting namespace {NAMESPACE} (the system, its volumes and Secrets)")
    run(
        [
            "kubectl",
            "--context",
            cluster.context,
            "delete",
            "namespace",
            NAMESPACE,
            "--ignore-not-found",
            "--wait=true",
        ]
    )


app = typer.Typer(add_completion=False, help=__doc__)
ClusterOption = Annotated[str | None, typer.Option(envvar="K8S", help="kind or minikube")]


def guarded(action: Callable[[], int | None]) -> None:
    try:
        code = action()
    except (ClusterError, ImageError) as error:
        print(f"k8s: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    raise typer.Exit(code or 0)


@app.command("up")
def up_command(cluster: ClusterOption = None) -> None:
    """Cluster, image, Secrets, overlay, rollout, smoke Job; safe to repeat."""
    guarded(lambda: up(cluster or None))


@app.command("load")
def load_command(
    cluster: ClusterOption = None,
    profile: Annotated[str, typer.Option(envvar="PROFILE")] = "smoke",
    args: Annotated[str, typer.Option(envvar="LOAD_ARGS", help="more harness options")] = "",
    reports: Annotated[Path, typer.Option()] = REPO_ROOT / "reports",
) -> None:
    """The load harness as a Job in the cluster; its JSON and PNG are copied to reports/."""
    guarded(lambda: load(cluster or None, profile, args, reports))


@app.command("down")
def down_command(cluster: ClusterOption = None) -> None:
    """Remove what `make up` created."""
    guarded(lambda: down(cluster or None))


if __name__ == "__main__":
    app()

"""What the real check asks of the running system, through kubectl only.

Each function answers one question (are the five databases there, is etcd in quorum,
which flows does the network let through) by running the images' own tools in their
pods: psql in postgres-0, etcdctl in etcd-0, kafka-topics.sh in kafka-0, Python in a
shop pod. Nothing here reaches a pod from the host, so NetworkPolicy applies to every
flow it tests.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from deploy.tooling import k8s

# Each service's database and the gateway's.
DATABASES = {f"shop_{name}" for name in k8s.DEPLOYMENTS}
TOPICS = {"shop.orders.v1", "shop.inventory.v1", "shop.payments.v1", "shop.deadletter.v1"}


class ProbeError(RuntimeError):
    pass


def exec_in(kubectl: k8s.Kubectl, target: str, *argv: str, container: str = "") -> str:
    args = ["exec", target, *(["-c", container] if container else []), "--", *argv]
    ran = kubectl(*args, capture=True, check=False)
    if not ran.ok:
        raise ProbeError(f"`{' '.join(argv)}` in {target} failed")
    return ran.stdout


def pods(kubectl: k8s.Kubectl) -> list[dict[str, object]]:
    out = kubectl("get", "pods", "-o", "json", capture=True).stdout
    items: list[dict[str, object]] = json.loads(out)["items"]
    return items


def long_running_readiness(kubectl: k8s.Kubectl) -> tuple[int, int, list[str]]:
    """(ready, total, not-ready names) over the pods that are not a Job's."""
    ready, total, waiting = 0, 0, []
    for pod in pods(kubectl):
        meta = pod["metadata"]
        status = pod["status"]
        assert isinstance(meta, dict) and isinstance(status, dict)
        owners = meta.get("ownerReferences") or []
        if any(owner.get("kind") == "Job" for owner in owners):
            continue
        total += 1
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        if conditions.get("Ready") == "True":
            ready += 1
        else:
            waiting.append(str(meta["name"]))
    return ready, total, waiting


def wait_all_ready(kubectl: k8s.Kubectl, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        ready, total, waiting = long_running_readiness(kubectl)
        if total and not waiting:
            return ready, total
        if time.monotonic() > deadline:
            raise ProbeError(f"pods not ready after {timeout:g}s: {', '.join(waiting)}")
        time.sleep(2)


def databases(kubectl: k8s.Kubectl) -> set[str]:
    return set(sql(kubectl, "postgres", "SELECT datname FROM pg_database").split())


def sql(kubectl: k8s.Kubectl, database: str, query: str) -> str:
    """As the administrator over the pod's own socket, with the password the pod holds
    (pg_hba.conf wants it there too)."""
    return exec_in(
        kubectl,
        "postgres-0",
        "sh",
        "-c",
        'PGPASSWORD="$POSTGRES_PASSWORD" exec psql "$@"',
        "psql",
        "-h",
        "/var/run/postgresql",
        "-U",
        "shop",
        "-d",
        database,
        "-Atc",
        query,
    ).strip()


# etcd-0's own certificate: enough for the members' status, which needs no etcd user.
ETCD_TLS = [
    "--cacert=/etc/etcd/tls/ca.pem",
    "--cert=/etc/etcd/tls/etcd.pem",
    "--key=/etc/etcd/tls/etcd-key.pem",
]


def etcd_members(kubectl: k8s.Kubectl) -> list[dict[str, object]]:
    """Every member's status as etcd-0 sees it: all three must answer, one leader."""
    out = exec_in(
        kubectl,
        "etcd-0",
        "etcdctl",
        *ETCD_TLS,
        "--endpoints=https://etcd-0.etcd-headless:2379,https://etcd-1.etcd-headless:2379,"
        "https://etcd-2.etcd-headless:2379",
        "endpoint",
        "status",
        "-w",
        "json",
    )
    members: list[dict[str, object]] = json.loads(out)
    return members


def registered_instances(kubectl: k8s.Kubectl) -> dict[str, int]:
    """Instances per service, as the operator reads the registry (shopctl in its pod):
    etcd's own certificate names no etcd user, so etcd-0 cannot read it itself."""
    counts: dict[str, int] = {}
    for service, _instance in registry_entries(kubectl):
        counts[service] = counts.get(service, 0) + 1
    return counts


def registry_entries(kubectl: k8s.Kubectl) -> list[tuple[str, str]]:
    """(service, instance id) of every registered instance."""
    out = exec_in(kubectl, "deploy/shopctl", "python", "-m", "ops.shopctl", "instances")
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    return [(row[0], row[1]) for row in rows if len(row) >= 2]


def topics(kubectl: k8s.Kubectl) -> set[str]:
    out = exec_in(
        kubectl,
        "kafka-0",
        "sh",
        "-c",
        "KAFKA_HEAP_OPTS=-Xmx64m /opt/kafka/bin/kafka-topics.sh "
        "--bootstrap-server localhost:9092 --command-config /etc/kafka/shop/client.properties "
        "--list",
        container="kafka",
    )
    # The broker's console logging reaches the tool's stdout too; topic names have no spaces.
    return {line for line in out.splitlines() if line and not line[0].isspace() and " " not in line}


def ready_replicas(kubectl: k8s.Kubectl, deployment: str) -> int:
    out = kubectl(
        "get", "deployment", deployment, "-o", "jsonpath={.status.readyReplicas}", capture=True
    ).stdout
    return int(out or 0)


def through_api_server(kubectl: k8s.Kubectl, service: str, path: str) -> k8s.Ran:
    """GET ``path`` of ``service`` (name:port) through the API server's service proxy."""
    url = f"/api/v1/namespaces/{k8s.NAMESPACE}/services/{service}/proxy{path}"
    return kubectl("get", "--raw", url, capture=True, check=False)


def scrape_targets(kubectl: k8s.Kubectl) -> dict[str, int]:
    """Prometheus' healthy targets per job, asked through the API server's proxy."""
    ran = through_api_server(kubectl, "prometheus:9090", "/api/v1/targets")
    if not ran.ok:
        raise ProbeError("Prometheus' targets could not be read")
    up: dict[str, int] = {}
    for target in json.loads(ran.stdout)["data"]["activeTargets"]:
        if target.get("health") == "up":
            job = str(target["labels"].get("job", "?"))
            up[job] = up.get(job, 0) + 1
    return up


def zipkin_healthy(kubectl: k8s.Kubectl) -> bool:
    ran = through_api_server(kubectl, "zipkin:9411", "/health")
    return ran.ok and '"UP"' in ran.stdout


def trace_everything(kubectl: k8s.Kubectl) -> str:
    """The global config's sample ratio raised to 1, as an operator would: shopctl, in its
    pod, with the admin's login; returns shopctl's answer (how many instances applied it)."""
    out = exec_in(
        kubectl, "deploy/shopctl", "python", "-m", "ops.shopctl", "config", "get", "global"
    )
    document = json.loads(out.split("\n", 1)[1])
    document["tracing"] = {"sample_ratio": 1.0}
    return exec_in(
        kubectl,
        "deploy/shopctl",
        "python",
        "-m",
        "ops.shopctl",
        "config",
        "set",
        "global",
        json.dumps(document),
    ).strip()


def traced_services(kubectl: k8s.Kubectl) -> set[str]:
    """The services Zipkin holds spans of, asked through the API server's proxy."""
    ran = through_api_server(kubectl, "zipkin:9411", "/api/v2/services")
    if not ran.ok:
        raise ProbeError("Zipkin's services could not be read")
    return set(json.loads(ran.stdout))


@dataclass(frozen=True)
class Flow:
    """A TCP connection tried from inside ``source`` (a shop pod) to ``host:port``."""

    source: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.host}:{self.port}"


CONNECT = (
    "import socket,sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4).close()\n"
    "except OSError:\n"
    "    print('refused'); sys.exit(0)\n"
    "print('open')\n"
)


def flow_open(kubectl: k8s.Kubectl, flow: Flow) -> bool:
    out = exec_in(kubectl, flow.source, "python", "-c", CONNECT, flow.host, str(flow.port))
    return out.strip() == "open"

"""Pods deleted on purpose, and what must hold when Kubernetes has replaced them.

- a service pod: its Deployment starts another, which registers itself in etcd under a
  new lease, and the deleted one's key is gone (its lease revoked on SIGTERM);
- kafka-0: back on the same volume, so the topics and their records are still there;
- postgres-0: back on the same volume, so every order placed before is still there;
- then the smoke Job once more: an order goes through the whole saga after both came
  back, and the audit over everything the run has written is clean.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from deploy.tooling import k8s
from deploy.tooling.real_check import probes

SERVICE = "inventory"


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise probes.ProbeError(f"{what} not back within {timeout:g}s")
        time.sleep(2)


def instance_keys(kubectl: k8s.Kubectl, service: str) -> set[str]:
    return {
        f"/services/{name}/{instance}"
        for name, instance in probes.registry_entries(kubectl)
        if name == service
    }


def pod_names(kubectl: k8s.Kubectl, service: str) -> list[str]:
    out = kubectl(
        "get",
        "pods",
        "-l",
        f"app.kubernetes.io/name={service}",
        "-o",
        "jsonpath={.items[*].metadata.name}",
        capture=True,
    ).stdout
    return out.split()


def replace_service_pod(kubectl: k8s.Kubectl) -> str:
    before = instance_keys(kubectl, SERVICE)
    victim = pod_names(kubectl, SERVICE)[0]
    wanted = probes.ready_replicas(kubectl, SERVICE)
    began = time.monotonic()
    kubectl("delete", "pod", victim, "--wait=true", capture=True)

    def registered_again() -> bool:
        keys = instance_keys(kubectl, SERVICE)
        return (
            probes.ready_replicas(kubectl, SERVICE) == wanted
            and len(keys) == wanted
            and bool(keys - before)
        )

    wait_for(f"{SERVICE}'s replacement", registered_again, 180)
    return f"{SERVICE} pod {victim} replaced and registered in {time.monotonic() - began:.0f}s"


def restart_statefulset_pod(kubectl: k8s.Kubectl, name: str) -> float:
    began = time.monotonic()
    kubectl("delete", "pod", f"{name}-0", "--wait=true", capture=True)
    kubectl("rollout", "status", f"statefulset/{name}", "--timeout=300s", capture=True)
    kubectl("wait", "--for=condition=Ready", f"pod/{name}-0", "--timeout=300s", capture=True)
    return time.monotonic() - began


def orders(kubectl: k8s.Kubectl) -> int:
    return int(probes.sql(kubectl, "shop_order", "SELECT count(*) FROM orders") or 0)


def recover_all(kubectl: k8s.Kubectl, state: Path, tags: k8s.Tags) -> str:
    lines = [replace_service_pod(kubectl)]
    placed = orders(kubectl)
    if placed == 0:
        raise probes.ProbeError("no orders before the restarts: nothing to look for after")

    kafka_took = restart_statefulset_pod(kubectl, "kafka")
    missing = probes.TOPICS - probes.topics(kubectl)
    if missing:
        raise probes.ProbeError(f"kafka-0 came back without its topics {sorted(missing)}")
    lines.append(f"kafka-0 back with its topics in {kafka_took:.0f}s")

    postgres_took = restart_statefulset_pod(kubectl, "postgres")
    after = orders(kubectl)
    if after < placed:
        raise probes.ProbeError(f"postgres-0 came back with {after} orders of {placed}")
    lines.append(f"postgres-0 back with its {placed} orders in {postgres_took:.0f}s")

    # The services reconnect on their own; the smoke Job waits for nothing else.
    k8s.run_smoke(kubectl, tags, state, show_log=False)
    lines.append("smoke after the restarts: order CONFIRMED, audit clean")
    return "; ".join(lines)

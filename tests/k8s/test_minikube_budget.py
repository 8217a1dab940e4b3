"""The minikube overlay fits the node `make up` makes: `minikube start --cpus 2 --memory 6g`.

The scheduler places a pod when the sum of the requests on the node, its own included,
stays within what the node can allocate. minikube's control plane (kube-apiserver 250m,
kube-controller-manager 200m, kube-scheduler 100m, etcd 100m, CoreDNS 100m) takes about
750m of the two CPUs and about 1 GiB, so the system gets 1200m (with a little room for
kube-proxy and the storage provisioner) and 5 GiB, including the Jobs that run beside it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from deploy.tooling.k8s_check import K8S_DIR, objects, render, rendered

CPU_BUDGET_M = 1200
MEMORY_BUDGET_MI = 6 * 1024 - 1024
# Jobs that run at the same time. The overlay's own are created together by every
# `make up` and wait for their dependencies; `make up` runs the smoke Job after they are
# done, and `make load-k8s` the load Job on the running system.
JOB_GROUPS = (
    {"seed", "config-defaults", "kafka-topics", "etcd-auth", "postgres-roles"},
    {"smoke"},
    {"trust-check"},
    {"load"},
)
Obj = dict[str, Any]


def cpu_m(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def memory_mi(value: str | int) -> float:
    text = str(value)
    for suffix, factor in (
        ("Gi", 1024),
        ("Mi", 1),
        ("Ki", 1 / 1024),
        ("G", 1e9 / 2**20),
        ("M", 1e6 / 2**20),
    ):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text) / 2**20


def pod_requests(spec: Obj) -> tuple[float, float]:
    """What the scheduler reserves for one pod: its containers' sum, or an init container's
    if that is larger (init containers run one at a time, before the others)."""

    def requests(c: Obj) -> tuple[float, float]:
        r = c.get("resources", {}).get("requests", {})
        return cpu_m(r.get("cpu", 0)), memory_mi(r.get("memory", 0))

    running = [requests(c) for c in spec["containers"]]
    init = [requests(c) for c in spec.get("initContainers", [])]
    cpu = max([sum(c for c, _ in running), *(c for c, _ in init)])
    memory = max([sum(m for _, m in running), *(m for _, m in init)])
    return cpu, memory


@cache
def minikube() -> tuple[Obj, ...]:
    return tuple(objects(rendered()["minikube"]))


def long_running(objs: tuple[Obj, ...], at_most: bool) -> tuple[float, float]:
    """The Deployments and StatefulSets at the autoscalers' minimum (or maximum)."""
    autoscaled = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"]
        for o in objs
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    cpu = memory = 0.0
    for o in objs:
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        hpa = autoscaled.get(o["metadata"]["name"])
        if hpa:
            replicas = hpa["maxReplicas"] if at_most else hpa.get("minReplicas", 1)
        else:
            replicas = o["spec"].get("replicas", 1)
        c, m = pod_requests(o["spec"]["template"]["spec"])
        cpu, memory = cpu + c * replicas, memory + m * replicas
    return cpu, memory


def jobs(objs: tuple[Obj, ...]) -> dict[str, tuple[float, float]]:
    return {
        o["metadata"]["name"]: pod_requests(o["spec"]["template"]["spec"])
        for o in objs
        if o["kind"] == "Job"
    }


def test_every_job_is_in_a_group() -> None:
    assert set(jobs(minikube())) == set().union(*JOB_GROUPS)


def test_the_system_and_its_jobs_fit_a_two_cpu_minikube() -> None:
    job_requests = jobs(minikube())
    groups = [
        (sum(job_requests[j][0] for j in g), sum(job_requests[j][1] for j in g)) for g in JOB_GROUPS
    ]
    job_cpu = max(c for c, _ in groups)
    job_memory = max(m for _, m in groups)
    for at_most in (False, True):
        cpu, memory = long_running(minikube(), at_most)
        what = "at the autoscalers' maximum" if at_most else "at the autoscalers' minimum"
        assert cpu + job_cpu <= CPU_BUDGET_M, f"{what}: {cpu:g}m + {job_cpu:g}m of Jobs"
        assert memory + job_memory <= MEMORY_BUDGET_MI, f"{what}: {memory:g}Mi + {job_memory:g}Mi"


def test_the_budget_counts_what_the_scheduler_counts() -> None:
    spec = {
        "initContainers": [{"resources": {"requests": {"cpu": "300m", "memory": "1Gi"}}}],
        "containers": [
            {"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}},
            {"resources": {"requests": {"cpu": "0.1", "memory": "128Mi"}}},
        ],
    }
    assert pod_requests(spec) == (300, 1024)
    del spec["initContainers"]
    assert pod_requests(spec) == (200, 384)


def test_the_kind_overlay_is_not_held_to_it() -> None:
    """kind's nodes are the host's CPUs; only minikube's VM is this small."""
    kind = tuple(objects(render(K8S_DIR / "overlays" / "kind")))
    assert long_running(kind, False)[0] > long_running(minikube(), False)[0]

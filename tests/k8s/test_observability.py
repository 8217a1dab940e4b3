"""Zipkin and Prometheus in the cluster against the services and the rules `make run` uses.

Every service pod (and the gateway's) sends its spans to the Zipkin Service and exposes
/metrics where its annotations say; Prometheus' scrape job, run here on the pods as its
Kubernetes discovery would see them, keeps exactly those, with the labels the rules read;
the rules are the file `make run`'s Prometheus loads; RBAC and the network policies allow
those flows and nothing more. Rendered as `make up` applies them; no cluster is needed
(the control plane of `make k8s-cluster-check` admits and rolls them out).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.tooling import k8s
from deploy.tooling.k8s_check import OVERLAYS
from devstack.install import ensure_promtool
from devstack.prometheus import RULES_FILE
from tests.k8s.test_manifests import (
    DEFINITIONS,
    Obj,
    allowed,
    config_map,
    find,
    overlay,
    service_env,
)

OBSERVABILITY = k8s.K8S_DIR / "observability"
RULES = OBSERVABILITY / "rules.yml"
POD_IP = "10.244.1.7"
# What Prometheus scrapes and Zipkin hears from: the five services and the gateway.
OBSERVED = (*DEFINITIONS, "gateway")


def pod_template(objs: tuple[Obj, ...], kind: str, name: str) -> Obj:
    return dict(find(objs, kind, name)["spec"]["template"])


def prometheus_files(objs: tuple[Obj, ...]) -> tuple[str, dict[str, str]]:
    """The config file's path in the Prometheus container, and the files beside it."""
    pod = pod_template(objs, "Deployment", "prometheus")["spec"]
    (container,) = pod["containers"]
    config_file = next(a for a in container["args"] if a.startswith("--config.file="))
    config_file = config_file.removeprefix("--config.file=")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = [
        v for v in pod["volumes"] if mounts.get(v["name"]) == str(Path(config_file).parent)
    ]
    return config_file, config_map(objs, volume["configMap"]["name"])


def prometheus_config(objs: tuple[Obj, ...]) -> dict[str, Any]:
    config_file, files = prometheus_files(objs)
    return dict(yaml.safe_load(files[Path(config_file).name]))


# --- Prometheus' pod discovery and relabelling, on the rendered pods --------------------------


def sanitize(name: str) -> str:
    """How Prometheus turns a Kubernetes label or annotation name into a label name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def discovered(
    template: Obj, pod_name: str, namespace: str = k8s.NAMESPACE
) -> list[dict[str, str]]:
    """The targets Prometheus' `role: pod` discovery makes of a running pod
    (discovery/kubernetes/pod.go): one per container port, one per container without."""
    meta = template["metadata"]
    common = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": pod_name,
        "__meta_kubernetes_pod_ip": POD_IP,
        **{f"__meta_kubernetes_pod_label_{sanitize(k)}": v for k, v in meta["labels"].items()},
        **{
            f"__meta_kubernetes_pod_annotation_{sanitize(k)}": v
            for k, v in meta.get("annotations", {}).items()
        },
    }
    spec = template["spec"]
    targets = []
    for container in [*spec["containers"], *spec.get("initContainers", [])]:
        with_container = {**common, "__meta_kubernetes_pod_container_name": container["name"]}
        if not container.get("ports"):
            targets.append({**with_container, "__address__": POD_IP})
        for port in container.get("ports", []):
            targets.append(
                {
                    **with_container,
                    "__address__": f"{POD_IP}:{port['containerPort']}",
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
                }
            )
    return targets


def relabel(labels: dict[str, str], configs: list[Obj]) -> dict[str, str] | None:
    """Prometheus' relabelling (model/relabel/relabel.go) for the actions the config uses;
    None when the target is dropped. Any other action fails, so the config cannot outgrow
    this check unnoticed."""
    labels = dict(labels)
    for config in configs:
        action = config.get("action", "replace")
        value = config.get("separator", ";").join(
            labels.get(name, "") for name in config.get("source_labels", [])
        )
        # Prometheus anchors every regex at both ends.
        match = re.fullmatch(config.get("regex", "(.*)"), value)
        if action == "keep":
            if match is None:
                return None
        elif action == "drop":
            if match is not None:
                return None
        elif action == "keepequal":
            if labels.get(config["target_label"], "") != value:
                return None
        elif action == "replace":
            if match is None:
                continue
            # $1 and ${1} are Prometheus' group references; \g<1> Python's.
            result = match.expand(
                re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", config.get("replacement", "$1"))
            )
            if result:
                labels[config["target_label"]] = result
            else:
                labels.pop(config["target_label"], None)
        else:
            pytest.fail(f"relabel action {action!r}: teach this check what it does")
    return labels


def scraped(config: dict[str, Any], objs: tuple[Obj, ...]) -> dict[str, list[dict[str, str]]]:
    """Workload name -> the targets the config scrapes of one of its pods: the address
    and the labels the series get (the "__" ones are gone after relabelling)."""
    (job,) = config["scrape_configs"]
    found: dict[str, list[dict[str, str]]] = {}
    for o in objs:
        if o["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        name = o["metadata"]["name"]
        for target in discovered(o["spec"]["template"], f"{name}-7d9f-x2"):
            kept = relabel(target, job["relabel_configs"])
            if kept is not None:
                found.setdefault(name, []).append(
                    {k: v for k, v in kept.items() if not k.startswith("__") or k == "__address__"}
                )
    return found


@pytest.mark.parametrize("name", OVERLAYS)
def test_prometheus_scrapes_every_service_pod_and_nothing_else(name: str) -> None:
    objs = overlay(name)
    config = prometheus_config(objs)
    (job,) = config["scrape_configs"]
    # The job the rules' tests name (observability/rules_test.yml), the pods of its own
    # namespace, which is all its Role lets it see.
    assert job["job_name"] == "shop"
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"own_namespace": True}}]
    targets = scraped(config, objs)
    assert set(targets) == set(OBSERVED)
    for service, found in targets.items():
        port = int(service_env(objs, service)[f"SHOP_{service.upper()}_METRICS_PORT"])
        # One target a pod (not one per container port), on the metrics port, labelled as
        # `make run`'s file_sd targets are (devstack/prometheus_targets.py).
        assert found == [
            {
                "__address__": f"{POD_IP}:{port}",
                "service": service,
                "instance_id": f"{service}-7d9f-x2",
            }
        ]
        # The pod's name is also the instance id it registers in etcd.
        container = pod_template(objs, "Deployment", service)["spec"]["containers"][0]
        instance_id = next(
            e for e in container["env"] if e["name"] == f"SHOP_{service.upper()}_INSTANCE_ID"
        )
        assert instance_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_the_relabelling_check_drops_what_prometheus_would() -> None:
    config = prometheus_config(overlay("kind"))
    configs = config["scrape_configs"][0]["relabel_configs"]
    service = pod_template(overlay("kind"), "Deployment", "order")

    def with_annotations(annotations: dict[str, str]) -> Obj:
        return {**service, "metadata": {**service["metadata"], "annotations": annotations}}

    kept = [relabel(t, configs) for t in discovered(service, "order-1")]
    assert sum(k is not None for k in kept) == 1
    # No opt-in, an opt-out, or a port the pod does not declare: nothing scraped.
    for opted in (
        {},
        {"prometheus.io/scrape": "false", "prometheus.io/port": "9464"},
        {"prometheus.io/scrape": "true", "prometheus.io/port": "9999"},
    ):
        pod = with_annotations(opted)
        assert [relabel(t, configs) for t in discovered(pod, "order-1")] == [None] * len(kept)
    replaced = relabel(
        {"a": "x:1"},
        [
            {
                "source_labels": ["a"],
                "regex": "(.+):(.+)",
                "replacement": "$2-${1}",
                "target_label": "b",
            }
        ],
    )
    assert replaced == {"a": "x:1", "b": "1-x"}
    with pytest.raises(pytest.fail.Exception, match="hashmod"):
        relabel({}, [{"action": "hashmod", "target_label": "x", "modulus": 2}])


@pytest.mark.parametrize("service", sorted(OBSERVED))
def test_every_service_pod_exposes_its_metrics_and_opts_in(service: str) -> None:
    prefix = f"SHOP_{service.upper()}_"
    for name in OVERLAYS:
        objs = overlay(name)
        env = service_env(objs, service)
        template = pod_template(objs, "Deployment", service)
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == int(env[f"{prefix}METRICS_PORT"]) == 9464
        assert env.get(f"{prefix}METRICS_ENABLED", "true") == "true"
        assert template["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(ports["metrics"]),
        }


@pytest.mark.parametrize("service", sorted(OBSERVED))
def test_every_service_sends_its_spans_to_the_zipkin_service(service: str) -> None:
    for name in OVERLAYS:
        objs = overlay(name)
        svc = find(objs, "Service", "zipkin")["spec"]
        (port,) = svc["ports"]
        zipkin = pod_template(objs, "Deployment", "zipkin")
        assert all(zipkin["metadata"]["labels"].get(k) == v for k, v in svc["selector"].items())
        container_ports = {
            p["name"]: p["containerPort"] for p in zipkin["spec"]["containers"][0]["ports"]
        }
        assert container_ports[port["targetPort"]] == 9411  # Zipkin's collector and UI
        endpoint = service_env(objs, service)[f"SHOP_{service.upper()}_TRACE_ENDPOINT"]
        # The Service's name in the same namespace, as etcd:2379 and kafka:9092 are.
        assert endpoint == f"http://zipkin:{port['port']}/api/v2/spans"


# --- the rules: the same file as `make run`'s ---------------------------------------------------


def test_make_runs_prometheus_loads_the_clusters_rules_file() -> None:
    """kustomize reads no file outside its folder, so the one rules file lives there and
    devstack's Prometheus reads it in place: no copy to keep in step."""
    assert RULES_FILE.resolve() == RULES.resolve()
    assert RULES.is_file()


@pytest.mark.parametrize("name", OVERLAYS)
def test_prometheus_loads_the_rules_beside_its_config(name: str) -> None:
    objs = overlay(name)
    _, files = prometheus_files(objs)
    config = prometheus_config(objs)
    # Relative rule files are the config file's folder: the same ConfigMap.
    assert config["rule_files"] == ["rules.yml"]
    assert files["rules.yml"] == RULES.read_text()


@pytest.fixture(scope="module")
def promtool() -> Path:
    return ensure_promtool()


def test_promtool_accepts_the_config_and_its_rules(promtool: Path, tmp_path: Path) -> None:
    """Debian's Prometheus is built without Kubernetes discovery, so its promtool checks
    the config with a file_sd source in its place: the relabelling, the rules, the rest."""
    _, files = prometheus_files(overlay("kind"))
    config = yaml.safe_load(files["prometheus.yml"])
    (job,) = config["scrape_configs"]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": ["targets.json"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "rules.yml").write_text(files["rules.yml"])
    (tmp_path / "targets.json").write_text("[]\n")
    res = subprocess.run(
        [str(promtool), "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 1 rule files found" in res.stdout + res.stderr


# --- RBAC: pod discovery in the namespace, nothing more ---------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_prometheus_may_watch_the_pods_of_its_namespace_and_nothing_more(name: str) -> None:
    objs = overlay(name)
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = find(objs, "Role", "prometheus")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    (binding,) = [o for o in objs if o["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "prometheus",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus", "namespace": k8s.NAMESPACE}
    ]
    pod = pod_template(objs, "Deployment", "prometheus")["spec"]
    assert pod["serviceAccountName"] == "prometheus"
    # The only pod with an API token.
    with_token = {
        o["metadata"]["name"]
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
        and o["spec"]["template"]["spec"].get("automountServiceAccountToken") is not False
    }
    assert with_token == {"prometheus"}


# --- network policies: the two flows, and no more ---------------------------------------------


def egress_rules(objs: tuple[Obj, ...], workload: str) -> list[Obj]:
    labels = pod_template(objs, "Deployment", workload)["metadata"]["labels"]
    return [
        rule
        for o in objs
        if o["kind"] == "NetworkPolicy"
        and "Egress" in o["spec"]["policyTypes"]
        and all(
            labels.get(k) == v for k, v in o["spec"]["podSelector"].get("matchLabels", {}).items()
        )
        and o["metadata"]["name"] != "dns"
        for rule in o["spec"].get("egress", [])
    ]


@pytest.mark.parametrize("name", OVERLAYS)
def test_network_policies_allow_the_observability_flows_and_no_more(name: str) -> None:
    objs = overlay(name)
    for service in OBSERVED:
        assert allowed(objs, service, "zipkin", 9411)
        assert allowed(objs, "prometheus", service, 9464)
        assert not allowed(objs, "prometheus", service, 50051)
        assert not allowed(objs, service, "zipkin", 9464)
    # Zipkin calls nothing (DNS aside).
    assert egress_rules(objs, "zipkin") == []
    # Prometheus: the metrics ports, and the Kubernetes API on private addresses only.
    service_rule, api_rule = egress_rules(objs, "prometheus")
    assert service_rule == {
        "to": [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "service"}}},
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}},
        ],
        "ports": [{"protocol": "TCP", "port": 9464}],
    }
    assert {p["ipBlock"]["cidr"] for p in api_rule["to"]} == {
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    }
    assert all(set(p) == {"ipBlock"} and "except" not in p["ipBlock"] for p in api_rule["to"])
    assert {p["port"] for p in api_rule["ports"]} == {443, 6443, 8443}


# --- both overlays carry them ---------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_overlays_render_zipkin_and_prometheus(name: str) -> None:
    objs = overlay(name)
    for kind, obj in (
        ("Deployment", "zipkin"),
        ("Service", "zipkin"),
        ("Deployment", "prometheus"),
        ("Service", "prometheus"),
        ("ServiceAccount", "prometheus"),
        ("Role", "prometheus"),
        ("RoleBinding", "prometheus"),
    ):
        assert find(objs, kind, obj)["metadata"]["namespace"] == k8s.NAMESPACE
    images = {
        c["image"]
        for workload in ("zipkin", "prometheus")
        for c in pod_template(objs, "Deployment", workload)["spec"]["containers"]
    }
    # Pinned, as the infrastructure's images are.
    assert images == {"docker.io/openzipkin/zipkin:3.6.1", "docker.io/prom/prometheus:v2.53.5"}
    for workload in ("zipkin", "prometheus"):
        assert find(objs, "Deployment", workload)["spec"]["replicas"] == 1

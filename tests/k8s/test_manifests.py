"""The manifests against the code: settings, ports, probes, Secrets, topics, network flows.

Rendered with kustomize exactly as `make up` applies them (both overlays, plus the
smoke and load Jobs), then read as plain data. No cluster is needed.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from deploy.tooling import k8s
from deploy.tooling.k8s_check import OVERLAYS, objects, render, rendered
from gateway.settings import GatewaySettings
from pki.identities import SERVER_NAMES
from services.inventory.main import SERVICE as INVENTORY
from services.order.main import SERVICE as ORDER
from services.payment.main import SERVICE as PAYMENT
from services.product.main import SERVICE as PRODUCT
from services.user.main import SERVICE as USER
from shared.rpc.server import LIVENESS
from shared.settings import DEFAULT_ISSUER, REPO_ROOT, ServiceSettings

DEFINITIONS = {d.name: d for d in (USER, PRODUCT, INVENTORY, PAYMENT, ORDER)}
Obj = dict[str, Any]


@cache
def overlay(name: str) -> tuple[Obj, ...]:
    return tuple(objects(rendered()[name]))


def find(objs: tuple[Obj, ...], kind: str, name: str) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_specs(objs: tuple[Obj, ...]) -> Iterator[tuple[str, Obj]]:
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]


def containers(spec: Obj) -> list[Obj]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def config_map(objs: tuple[Obj, ...], name: str) -> dict[str, str]:
    return dict(find(objs, "ConfigMap", name)["data"])


def service_env(objs: tuple[Obj, ...], service: str) -> dict[str, str]:
    """What the service's container sees: its ConfigMap, then its own env entries."""
    container = find(objs, "Deployment", service)["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_map(objs, source["configMapRef"]["name"]))
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", "<from the cluster>")
    return env


# --- the Pod Security "restricted" profile, and a read-only root -----------------------------

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(spec: Obj) -> list[str]:
    """The checks of the "restricted" Pod Security Standard, plus readOnlyRootFilesystem."""
    found = []
    pod = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            found.append(flag)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}: {kinds}")
    pod_seccomp = pod.get("seccompProfile", {}).get("type")
    for c in containers(spec):
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation not false")
        if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", pod.get("runAsUser")) in (0, None):
            found.append(f"{name}: runAsUser is root or unset")
        if sc.get("seccompProfile", {}).get("type", pod_seccomp) not in (
            "RuntimeDefault",
            "Localhost",
        ):
            found.append(f"{name}: seccomp profile")
        caps = sc.get("capabilities", {})
        if caps.get("drop") != ["ALL"]:
            found.append(f"{name}: capabilities not dropped")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities added")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{name}: hostPort")
        if sc.get("readOnlyRootFilesystem") is not True:
            found.append(f"{name}: root filesystem writable")
    return found


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_pod_passes_the_restricted_profile(name: str) -> None:
    checked = 0
    for what, spec in pod_specs(overlay(name)):
        assert restricted_violations(spec) == [], what
        checked += 1
    # Five services, the gateway, shopctl, Zipkin, Prometheus, three StatefulSets, and the
    # seed, etcd-auth, postgres-roles, topics, config-defaults, smoke, trust-check and load
    # Jobs.
    assert checked == 20
    namespace = find(overlay(name), "Namespace", k8s.NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_restricted_check_finds_what_it_should() -> None:
    spec = {
        "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "hostNetwork": True,
    }
    found = "\n".join(restricted_violations(spec))
    for expected in (
        "hostNetwork",
        "hostPath",
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "runAsUser",
        "seccomp",
        "capabilities not dropped",
        "capabilities added",
        "writable",
    ):
        assert expected in found


# --- settings -------------------------------------------------------------------------------

# Their defaults point at this machine (127.0.0.1, the dev stack's files) or pick a free
# port: in a cluster each must be set. trace_endpoint's default is no spans at all.
SET_IN_A_CLUSTER = {
    "host",
    "port",
    "health_port",
    "metrics_port",
    "trace_endpoint",
    "advertise_host",
    "instance_id",
    "etcd_endpoint",
    "kafka_bootstrap",
    "pg_dsn",
    "tls_dir",
}


def local_default(settings_type: type[ServiceSettings], field: str) -> bool:
    info = settings_type.model_fields[field]
    default = info.get_default(call_default_factory=False)
    if isinstance(default, Path):
        return default.is_relative_to(REPO_ROOT)
    return "127.0.0.1" in str(default)


@pytest.mark.parametrize("service", sorted(DEFINITIONS))
def test_every_setting_a_service_reads_is_set_or_safe(service: str) -> None:
    settings_type = DEFINITIONS[service].settings_type
    prefix = f"SHOP_{service.upper()}_"
    for name in OVERLAYS:
        env = service_env(overlay(name), service)
        set_fields = {k.removeprefix(prefix).lower() for k in env if k.startswith(prefix)}
        # No typo: every SHOP_<SVC>_ variable is a setting the service has.
        assert set_fields <= set(settings_type.model_fields), set_fields - set(
            settings_type.model_fields
        )
        must = SET_IN_A_CLUSTER | {
            f for f in settings_type.model_fields if local_default(settings_type, f)
        }
        assert must <= set_fields, f"{name}/{service}: unset {must - set_fields}"
        # The values pass the service's own validation.
        values = {
            k.removeprefix(prefix).lower(): v.replace("$(PG_PASSWORD)", "secret")
            for k, v in env.items()
            if k.startswith(prefix)
        }
        values["advertise_host"] = "10.0.0.7"
        values["instance_id"] = f"{service}-7d9f-x2"
        try:
            settings_type.model_validate(values)
        except ValidationError as error:
            pytest.fail(f"{name}/{service}: {error}")


def test_the_setting_check_knows_a_local_default() -> None:
    assert local_default(USER.settings_type, "jwt_private_key_file")
    assert local_default(ORDER.settings_type, "etcd_endpoint")
    assert not local_default(ORDER.settings_type, "saga_timeout_seconds")


# --- ports, probes, shutdown ----------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(DEFINITIONS))
def test_ports_and_probes_match_the_service(service: str) -> None:
    prefix = f"SHOP_{service.upper()}_"
    for name in OVERLAYS:
        objs = overlay(name)
        env = service_env(objs, service)
        pod = find(objs, "Deployment", service)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # The user service's authorization server too (HTTPS, beside gRPC).
        oauth = {"oauth": int(env[f"{prefix}OAUTH_PORT"])} if service == "user" else {}
        assert (
            ports
            == {
                "grpc": int(env[f"{prefix}PORT"]),
                "probe": int(env[f"{prefix}HEALTH_PORT"]),
                "metrics": int(env[f"{prefix}METRICS_PORT"]),
            }
            | oauth
        )
        assert env[f"{prefix}HOST"] == "0.0.0.0"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == ports["probe"], probe
        # Readiness follows the database; liveness does not (shared/rpc/server.py).
        assert container["livenessProbe"]["grpc"]["service"] == LIVENESS
        assert "service" not in container["readinessProbe"]["grpc"]
        assert container["command"] == ["python", "-m", f"services.{service}.main", "serve"]
        svc = find(objs, "Service", service)["spec"]
        assert svc["ports"][0]["targetPort"] == "grpc"
        assert {p["targetPort"] for p in svc["ports"]} == {"grpc", *oauth}
        assert svc["selector"] == {"app.kubernetes.io/name": service}
        # SIGTERM: revoke, drain for the grace period, then close; the kubelet waits longer.
        grace = float(env[f"{prefix}SHUTDOWN_GRACE_SECONDS"])
        assert pod["terminationGracePeriodSeconds"] >= grace + 10
        advertise = next(e for e in container["env"] if e["name"] == f"{prefix}ADVERTISE_HOST")
        assert advertise["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


@pytest.mark.parametrize("name", OVERLAYS)
def test_replicas_budgets_and_autoscalers(name: str) -> None:
    objs = overlay(name)
    autoscaled = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"]
        for o in objs
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    assert set(autoscaled) == {"product", "order"}
    for service in DEFINITIONS:
        deployment = find(objs, "Deployment", service)["spec"]
        replicas = (
            autoscaled[service]["minReplicas"] if service in autoscaled else deployment["replicas"]
        )
        assert replicas == 2, service
        # With an autoscaler the count is its alone: a replicas field would fight it.
        assert ("replicas" in deployment) == (service not in autoscaled)
        assert find(objs, "PodDisruptionBudget", service)["spec"]["minAvailable"] == 1
    assert find(objs, "StatefulSet", "etcd")["spec"]["replicas"] == 3
    assert find(objs, "PodDisruptionBudget", "etcd")["spec"]["minAvailable"] == 2


# --- Secrets ------------------------------------------------------------------------------


def secret_uses(objs: tuple[Obj, ...]) -> dict[str, set[str]]:
    """Secret name -> the keys the pods read from it (files of a volume, or one key)."""
    used: dict[str, set[str]] = {}
    for _, spec in pod_specs(objs):
        # volume -> the Secrets it shows, each with the keys it names (none: all of them)
        mounted: dict[str, list[tuple[str, set[str]]]] = {}
        for v in spec.get("volumes", []):
            if "secret" in v:
                items = {i["key"] for i in v["secret"].get("items", [])}
                mounted[v["name"]] = [(v["secret"]["secretName"], items)]
            for source in v.get("projected", {}).get("sources", []):
                if "secret" in source:
                    items = {i["key"] for i in source["secret"].get("items", [])}
                    mounted.setdefault(v["name"], []).append((source["secret"]["name"], items))
        for c in containers(spec):
            for entry in c.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used.setdefault(ref["name"], set()).add(ref["key"])
            for mount in c.get("volumeMounts", []):
                for secret, keys in mounted.get(mount["name"], []):
                    used.setdefault(secret, set()).update(keys)
    return used


def test_every_secret_the_pods_use_is_created_by_make_up(tmp_path: Path) -> None:
    specs = {s.name: s for s in k8s.secret_specs(tmp_path)}
    for name in OVERLAYS:
        used = secret_uses(overlay(name))
        assert set(used) == set(specs), f"{name}: used {sorted(used)}, made {sorted(specs)}"
        for secret, keys in used.items():
            assert keys <= set(specs[secret].files), secret
    # Each service's TLS Secret holds exactly the files shared/tls.py reads for it.
    for service in DEFINITIONS:
        assert set(specs[f"shop-tls-{service}"].files) == {
            "ca.pem",
            f"{service}.pem",
            f"{service}-key.pem",
        }
    # The CA's private key never goes into the cluster.
    assert not any("ca-key.pem" in s.files for s in specs.values())


def test_make_up_makes_every_secret_file(tmp_path: Path) -> None:
    k8s.ensure_local_secrets(tmp_path)
    password = k8s.postgres_password(tmp_path, "shop_order")
    first = password.read_text()
    k8s.ensure_local_secrets(tmp_path)  # safe to repeat: the same secrets
    assert password.read_text() == first
    assert re.fullmatch(r"[0-9a-f]{48}", first)
    assert stat.S_IMODE(password.stat().st_mode) == 0o600
    # One password per role, none shared.
    roles = ["shop", *(f"shop_{s}" for s in DEFINITIONS)]
    assert len({k8s.postgres_password(tmp_path, r).read_text() for r in roles}) == len(roles)
    for spec in k8s.secret_specs(tmp_path):
        for path in spec.files.values():
            assert path.is_file() and path.stat().st_size > 0, path


def mounted_secret(pod: Obj, container: Obj, folder: str) -> str:
    """The Secret mounted at ``folder`` in ``container``."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    (volume,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == folder]
    return str(volumes[volume]["secret"]["secretName"])


def test_the_user_service_reads_its_oauth_clients_from_the_secret(tmp_path: Path) -> None:
    for name in OVERLAYS:
        objs = overlay(name)
        env = service_env(objs, "user")
        pod = find(objs, "Deployment", "user")["spec"]["template"]["spec"]
        folder = Path(env["SHOP_USER_OAUTH_CLIENTS_FILE"]).parent
        assert folder == k8s.OAUTH_MOUNT
        assert mounted_secret(pod, pod["containers"][0], str(folder)) == "shop-oauth-clients"
    # What `make up` puts in that Secret: the clients file, and each secret it names, at
    # the name it gives (the Secret's key, a file of the mount).
    k8s.ensure_local_secrets(tmp_path)
    specs = {s.name: s for s in k8s.secret_specs(tmp_path)}
    clients = specs["shop-oauth-clients"].files
    document = json.loads(clients["clients.json"].read_text())
    for client in document:
        if "secret_file" in client:
            secret = Path(client["secret_file"])
            assert secret.parent == k8s.OAUTH_MOUNT and secret.name in clients
    storefront = next(c for c in document if c["client_id"] == "storefront")
    assert storefront["redirect_uris"] == [f"{k8s.PUBLIC_URL}/auth/callback"]
    assert not [c for c in document if c["client_id"] == "shop-cli" and "secret_file" in c]
    # The gateway's pods hold the storefront's secret alone: the same one.
    (only,) = specs["shop-oauth-storefront"].files.values()
    assert only.read_text() == clients["storefront"].read_text() and only.read_text()
    assert set(clients) == {"clients.json", "storefront", "loadgen"}


def test_the_user_service_reads_its_bootstrap_key_from_the_secret() -> None:
    for name in OVERLAYS:
        objs = overlay(name)
        env = service_env(objs, "user")
        pod = find(objs, "Deployment", "user")["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        key_dir = str(Path(env["SHOP_USER_JWT_PRIVATE_KEY_FILE"]).parent)
        (volume,) = [n for n, path in mounts.items() if path == key_dir]
        assert volumes[volume]["secret"]["secretName"] == "shop-jwt-bootstrap"
        tls = [n for n, path in mounts.items() if path == env["SHOP_USER_TLS_DIR"]]
        assert volumes[tls[0]]["secret"]["secretName"] == "shop-tls-user"


# --- the gateway ----------------------------------------------------------------------------

# Set in a cluster, or it would point at this machine (ServiceSettings' defaults).
GATEWAY_SET_IN_A_CLUSTER = {
    "host",
    "http_port",
    "public_url",
    "oauth_client_id",
    "oauth_client_secret_file",
    "metrics_port",
    "trace_endpoint",
    "advertise_host",
    "instance_id",
    "etcd_endpoint",
    "pg_dsn",
    "tls_dir",
}


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_gateway_serves_http_and_is_probed_on_its_health_paths(name: str) -> None:
    objs = overlay(name)
    env = service_env(objs, "gateway")
    deployment = find(objs, "Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "http": int(env["SHOP_GATEWAY_HTTP_PORT"]),
        "metrics": int(env["SHOP_GATEWAY_METRICS_PORT"]),
    }
    assert ports["http"] == 8080 and env["SHOP_GATEWAY_HOST"] == "0.0.0.0"
    assert container["command"] == ["python", "-m", "gateway", "serve"]
    probes = {
        p: container[p]["httpGet"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes["readinessProbe"] == {"path": "/healthz/ready", "port": "http"}
    assert (
        probes["livenessProbe"]
        == probes["startupProbe"]
        == {"path": "/healthz/live", "port": "http"}
    )
    # Its migrations before it serves, as the same image, with the same database login.
    (migrate,) = pod["initContainers"]
    assert migrate["command"] == ["python", "-m", "gateway", "migrate"]
    assert migrate["image"] == container["image"]
    assert migrate["env"] == [e for e in container["env"] if "PG_" in e["name"]]
    # Scraped on its metrics port; two replicas, one kept through a drain.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert deployment["spec"]["replicas"] == 2
    assert find(objs, "PodDisruptionBudget", "gateway")["spec"]["minAvailable"] == 1
    svc = find(objs, "Service", "gateway")["spec"]
    assert {(p["port"], p["targetPort"]) for p in svc["ports"]} == {
        (8080, "http"),
        (ports["metrics"], "metrics"),
    }
    grace = float(env["SHOP_GATEWAY_SHUTDOWN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= grace + 10
    # Not a service: the services' policies (Kafka among them) do not apply to it.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "edge"


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_gateway_is_its_own_party_with_its_own_secrets(name: str) -> None:
    objs = overlay(name)
    env = service_env(objs, "gateway")
    prefix = "SHOP_GATEWAY_"
    settings = {k.removeprefix(prefix).lower() for k in env if k.startswith(prefix)}
    # No typo: every variable is a setting the gateway has, and the values pass its checks.
    assert settings <= set(GatewaySettings.model_fields), settings - set(
        GatewaySettings.model_fields
    )
    missing = GATEWAY_SET_IN_A_CLUSTER - settings
    assert not missing, missing
    values = {
        k.removeprefix(prefix).lower(): v.replace("$(PG_PASSWORD)", "secret")
        for k, v in env.items()
        if k.startswith(prefix)
    }
    values |= {"advertise_host": "10.0.0.7", "instance_id": "gateway-7d9f-x2"}
    try:
        GatewaySettings.model_validate(values)
    except ValidationError as error:
        pytest.fail(f"{name}/gateway: {error}")
    pod = find(objs, "Deployment", "gateway")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert mounted_secret(pod, container, env["SHOP_GATEWAY_TLS_DIR"]) == "shop-tls-gateway"
    secret = Path(env["SHOP_GATEWAY_OAUTH_CLIENT_SECRET_FILE"])
    assert env["SHOP_GATEWAY_OAUTH_CLIENT_ID"] == "storefront"
    assert mounted_secret(pod, container, str(secret.parent)) == "shop-oauth-storefront"
    specs = {s.name: s for s in k8s.secret_specs(Path("/nonexistent"))}
    assert secret.name in specs["shop-oauth-storefront"].files
    dsn = env["SHOP_GATEWAY_PG_DSN"]
    assert dsn.startswith("postgresql://shop_gateway:$(PG_PASSWORD)@postgres:5432/shop_gateway?")
    assert "sslmode=verify-full" in dsn and "sslrootcert=/etc/shop/tls/ca.pem" in dsn
    password = next(e for e in container["env"] if e["name"] == "PG_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"]["name"] == "shop-postgres-gateway"


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_storefront_origin_is_the_issuer_everyone_verifies(name: str) -> None:
    """The port-forward's http://localhost:8080 is the gateway's public URL, and the default
    issuer (shared/settings.py) that no workload overrides."""
    objs = overlay(name)
    assert service_env(objs, "gateway")["SHOP_GATEWAY_PUBLIC_URL"] == k8s.PUBLIC_URL
    assert k8s.PUBLIC_URL == DEFAULT_ISSUER
    for workload in (*DEFINITIONS, "gateway"):
        assert not [k for k in service_env(objs, workload) if k.endswith("_JWT_ISSUER")], workload


# --- infrastructure -------------------------------------------------------------------------


def test_the_rights_jobs_apply_the_one_table_as_the_least_identity_that_can() -> None:
    """etcd's roles as etcd's root, the topics and ACLs as the operator, the roles in
    PostgreSQL as its administrator with only the CA's certificate (ops/trust)."""
    objs = overlay("kind")
    expected = {"etcd-auth": "etcd", "kafka-topics": "kafka", "postgres-roles": "postgres"}
    for job, subcommand in expected.items():
        pod = find(objs, "Job", job)["spec"]["template"]["spec"]
        command = pod["containers"][0]["command"]
        assert command[:4] == ["python", "-m", "ops.trust", subcommand], job
        assert "--wait" in command, job
    tls = {
        job: next(
            v
            for v in find(objs, "Job", job)["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "tls"
        )["secret"]
        for job in expected
    }
    assert tls["etcd-auth"]["secretName"] == "shop-tls-root"
    assert tls["kafka-topics"]["secretName"] == "shop-tls-operator"
    assert [i["key"] for i in tls["postgres-roles"]["items"]] == ["ca.pem"]


def test_every_service_logs_in_to_postgres_as_its_own_role_over_verified_tls() -> None:
    for service in DEFINITIONS:
        objs = overlay("kind")
        env = service_env(objs, service)
        dsn = env[f"SHOP_{service.upper()}_PG_DSN"]
        assert dsn.startswith(
            f"postgresql://shop_{service}:$(PG_PASSWORD)@postgres:5432/shop_{service}?"
        )
        assert "sslmode=verify-full" in dsn and "sslrootcert=/etc/shop/tls/ca.pem" in dsn
        container = find(objs, "Deployment", service)["spec"]["template"]["spec"]["containers"][0]
        password = next(e for e in container["env"] if e["name"] == "PG_PASSWORD")
        assert password["valueFrom"]["secretKeyRef"]["name"] == f"shop-postgres-{service}"
    hba = (k8s.K8S_DIR / "infra" / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    # Over the network only hostssl is admitted, and everything unmatched is refused.
    assert {r[0] for r in rules if r[-1] != "reject"} <= {"hostssl", "local"}
    assert rules[-1] == ["host", "all", "all", "all", "reject"]


# --- network policies ----------------------------------------------------------------------


def labels_of(objs: tuple[Obj, ...]) -> dict[str, dict[str, str]]:
    return {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def allowed(objs: tuple[Obj, ...], source: str, target: str, port: int) -> bool:
    """Whether the policies let ``source``'s pods open ``port`` on ``target``'s pods."""
    labels = labels_of(objs)
    policies = [o["spec"] for o in objs if o["kind"] == "NetworkPolicy"]

    def permits(direction: str, pod: str, peer: str) -> bool:
        rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
        governing = [
            p
            for p in policies
            if direction in p["policyTypes"] and selects(p["podSelector"], labels[pod])
        ]
        assert governing, f"{pod} has no {direction} policy (default deny covers all)"
        for policy in governing:
            for rule in policy.get(rules_key, []):
                ports = {p["port"] for p in rule.get("ports", [])}
                peers = rule.get(peers_key)
                if ports and port not in ports:
                    continue
                if peers is None or any(
                    "podSelector" in p
                    and "namespaceSelector" not in p
                    and selects(p["podSelector"], labels[peer])
                    for p in peers
                ):
                    return True
        return False

    return permits("Egress", source, target) and permits("Ingress", target, source)


FLOWS_ALLOWED = [
    *(
        (s, infra, port)
        for s in DEFINITIONS
        for infra, port in (("postgres", 5432), ("etcd", 2379), ("kafka", 9092))
    ),
    ("order", "product", 50051),
    *(("shopctl", s, 50051) for s in DEFINITIONS),
    ("shopctl", "etcd", 2379),
    ("smoke", "postgres", 5432),
    ("seed", "user", 50051),
    ("config-defaults", "etcd", 2379),
    ("kafka-topics", "kafka", 9092),
    ("etcd-auth", "etcd", 2379),
    ("postgres-roles", "postgres", 5432),
    ("etcd", "etcd", 2380),
    *((s, "zipkin", 9411) for s in DEFINITIONS),
    *(("prometheus", s, 9464) for s in DEFINITIONS),
    # The edge: anyone to its HTTP port; it to every service, user's OAuth2 port, etcd,
    # PostgreSQL and Zipkin; Prometheus to its metrics.
    ("shopctl", "gateway", 8080),
    ("smoke", "gateway", 8080),
    *(("gateway", s, 50051) for s in DEFINITIONS),
    ("gateway", "user", 8443),
    ("gateway", "etcd", 2379),
    ("gateway", "postgres", 5432),
    ("gateway", "zipkin", 9411),
    ("prometheus", "gateway", 9464),
]
FLOWS_DENIED = [
    ("gateway", "kafka", 9092),  # the edge uses no Kafka
    ("order", "user", 8443),  # the authorization server's port is the gateway's alone
    ("shopctl", "user", 8443),
    ("gateway", "payment", 9464),  # only Prometheus scrapes
    ("shopctl", "gateway", 9464),
    ("gateway", "prometheus", 9090),
    ("payment", "product", 50051),  # only order calls product
    ("product", "order", 50051),
    ("inventory", "payment", 50051),
    ("order", "user", 50051),
    ("shopctl", "kafka", 9092),
    ("kafka-topics", "postgres", 5432),
    ("etcd-auth", "postgres", 5432),  # each rights Job reaches only its own server
    ("etcd-auth", "kafka", 9092),
    ("postgres-roles", "etcd", 2379),
    ("postgres-roles", "kafka", 9092),
    ("config-defaults", "kafka", 9092),
    ("order", "etcd", 2380),  # raft is etcd's own
    ("product", "postgres", 2379),
    ("order", "product", 9464),  # only Prometheus scrapes
    ("shopctl", "payment", 9464),
    ("shopctl", "zipkin", 9411),  # only the services send spans
    ("seed", "zipkin", 9411),
    ("prometheus", "zipkin", 9411),
    ("prometheus", "etcd", 2379),  # discovery is the Kubernetes API's, not etcd's
    ("prometheus", "postgres", 5432),
    ("zipkin", "order", 50051),
    ("order", "prometheus", 9090),  # nothing in the system queries Prometheus
    ("shopctl", "prometheus", 9090),
]


@pytest.mark.parametrize("name", OVERLAYS)
def test_network_policies_allow_exactly_the_flows_the_system_uses(name: str) -> None:
    objs = overlay(name)
    for flow in FLOWS_ALLOWED:
        assert allowed(objs, *flow), f"blocked: {flow}"
    for flow in FLOWS_DENIED:
        assert not allowed(objs, *flow), f"allowed: {flow}"


# --- what `make up` renders ------------------------------------------------------------------


# What `make up` would pin: each image at a content tag of its own.
BUILT = {
    "localhost/shop": "0123456789ab",
    "localhost/shop-ops": "ba9876543210",
    "localhost/shop-loadgen": "abcdefabcdef",
}


def test_make_up_pins_the_images_to_the_build(tmp_path: Path) -> None:
    """The kustomization `make up` writes, rendered by kustomize itself."""
    target = k8s.pinned_kustomization(tmp_path / "deploy", k8s.K8S_DIR / "overlays" / "kind", BUILT)
    images = {
        c["image"]
        for _, spec in pod_specs(tuple(objects(render(target))))
        for c in containers(spec)
        if c["image"].startswith("localhost/shop")
    }
    assert images == {"localhost/shop:0123456789ab", "localhost/shop-ops:ba9876543210"}


# The package a container runs (its `python -m`) -> the image that carries it.
IMAGE_OF = {
    "services": "localhost/shop",
    "gateway": "localhost/shop",
    "ops": "localhost/shop-ops",
    "loadgen": "localhost/shop-loadgen",
}


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_container_runs_from_the_image_that_carries_its_code(name: str) -> None:
    """The services' image holds no tools; the Jobs and shopctl run from the ops image,
    the load Job from the load generator's."""
    found = {}
    for where, spec in pod_specs(overlay(name)):
        for c in containers(spec):
            if not c["image"].startswith("localhost/"):
                continue
            modules = re.findall(r"-m ([\w.]+)", " ".join(c["command"]))
            # shopctl's pod only waits: people `kubectl exec` python -m ops.shopctl into it.
            package = modules[0].split(".")[0] if modules else "ops"
            assert where != "Deployment/shopctl" or not modules, where
            found[where] = c["image"]
            assert c["image"] == f"{IMAGE_OF[package]}:dev", (where, c["command"])
    assert set(found.values()) == {f"{image}:dev" for image in IMAGE_OF.values()}


def test_make_load_k8s_passes_its_profile_to_the_job(tmp_path: Path) -> None:
    target = k8s.pinned_kustomization(
        tmp_path / "load",
        k8s.K8S_DIR / "jobs" / "load",
        BUILT,
        k8s.load_settings("flash-sale", "--rate 40"),
    )
    objs = tuple(objects(render(target)))
    job = find(objs, "Job", "load")["spec"]["template"]["spec"]["containers"][0]
    (settings,) = [o for o in objs if o["kind"] == "ConfigMap"]
    assert job["envFrom"][0]["configMapRef"]["name"] == settings["metadata"]["name"]
    assert settings["data"] == {"LOAD_PROFILE": "flash-sale", "LOAD_ARGS": "--rate 40"}
    assert job["image"] == "localhost/shop-loadgen:abcdefabcdef"


def test_both_overlays_hold_the_same_objects() -> None:
    def names(name: str) -> set[tuple[str, str]]:
        return {
            (o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])) for o in overlay(name)
        }

    assert names("kind") == names("minikube")


def test_job_conditions_are_read_right() -> None:
    assert k8s.job_finished("") is None
    assert k8s.job_finished("SuccessCriteriaMet=True;Complete=True;") is True
    assert k8s.job_finished("FailureTarget=True;Failed=True;") is False
    assert k8s.job_finished("Suspended=False;") is None


def test_the_cluster_is_chosen_by_k8s_or_by_what_is_installed(monkeypatch) -> None:
    with pytest.raises(k8s.ClusterError, match="kind or minikube"):
        k8s.choose_cluster("k3s")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(k8s.ClusterError, match="neither"):
        k8s.choose_cluster(None)
    with pytest.raises(k8s.ClusterError, match="not installed"):
        k8s.choose_cluster("kind")


@pytest.mark.parametrize("name", OVERLAYS)
def test_stateful_volumes_keep_their_permissions(name: str) -> None:
    """PostgreSQL and etcd refuse a data directory the kubelet re-owned on every start."""
    for o in overlay(name):
        if o["kind"] != "StatefulSet":
            continue
        pod = o["spec"]["template"]["spec"]
        assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
        claims = {t["metadata"]["name"] for t in o["spec"]["volumeClaimTemplates"]}
        mounted = {m["name"] for c in containers(pod) for m in c["volumeMounts"]}
        assert claims <= mounted, o["metadata"]["name"]


def test_the_minikube_overlay_patches_what_it_means_to() -> None:
    kafka = find(overlay("minikube"), "StatefulSet", "kafka")["spec"]["template"]["spec"]
    heap = kafka["containers"][0]["env"][0]
    assert heap == {"name": "KAFKA_HEAP_OPTS", "value": "-Xms384m -Xmx384m"}
    for service in DEFINITIONS:
        pod = find(overlay("minikube"), "Deployment", service)["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["requests"]["cpu"] == "40m"
    for hpa in (o for o in overlay("minikube") if o["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["metrics"][0]["resource"]["target"]
        assert target == {"type": "AverageValue", "averageValue": "70m"}
        assert hpa["spec"]["maxReplicas"] == 3


@pytest.mark.parametrize("name", OVERLAYS)
def test_no_pod_gets_service_links(name: str) -> None:
    """The images read their own prefixes (ETCD_*, KAFKA_*, POSTGRES_*), and a Service named
    like one (etcd, kafka, postgres) would add ETCD_PORT and the like to every pod's env."""
    for what, spec in pod_specs(overlay(name)):
        assert spec.get("enableServiceLinks") is False, what


@pytest.mark.parametrize("name", OVERLAYS)
def test_kafka_logs_only_to_stdout(name: str) -> None:
    """No GC log (-loggc) and no log4j file appender: files in /tmp would get the pod evicted."""
    objs = overlay(name)
    kafka = find(objs, "StatefulSet", "kafka")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in kafka["env"]}
    assert env["EXTRA_ARGS"] == "-name kafkaServer"
    config = env["KAFKA_LOG4J_OPTS"].removeprefix("-Dlog4j2.configurationFile=")
    mount = next(
        m for m in kafka["volumeMounts"] if config.startswith(m["mountPath"].rstrip("/") + "/")
    )
    volumes = {
        v["name"]: v
        for v in find(objs, "StatefulSet", "kafka")["spec"]["template"]["spec"]["volumes"]
    }
    files = config_map(objs, volumes[mount["name"]]["configMap"]["name"])
    log4j2 = files[config.rsplit("/", 1)[1]]
    appenders = {
        line.split("=", 1)[1].strip()
        for line in log4j2.splitlines()
        if re.match(r"appender\.\w+\.type\s*=", line)
    }
    assert appenders == {"Console"}
    server = files["server.properties"]
    found = re.search(r"^log\.dirs=(.+)$", server, re.M)
    assert found, "server.properties sets no log.dirs"
    log_dirs = found.group(1)
    assert log_dirs.startswith("/var/lib/kafka/data/"), log_dirs
    assert f"{mount['mountPath']}/server.properties" in kafka["command"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_postgres_probes_spare_the_first_init(name: str) -> None:
    """initdb's temporary server listens on the socket only: no TCP probe may kill it."""
    pod = find(overlay(name), "StatefulSet", "postgres")["spec"]["template"]["spec"]
    postgres = pod["containers"][0]
    for probe in ("startupProbe", "livenessProbe"):
        command = " ".join(postgres[probe]["exec"]["command"])
        assert "-h /var/run/postgresql" in command, probe
        assert "initialDelaySeconds" not in postgres[probe]
    startup = postgres["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    env = {e["name"]: e.get("value") for e in postgres["env"]}
    assert env["PGDATA"].startswith("/var/lib/postgresql/data/")


@pytest.mark.parametrize("name", OVERLAYS)
def test_first_run_jobs_wait_without_spending_their_retries(name: str) -> None:
    for job in ("seed", "config-defaults"):
        spec = find(overlay(name), "Job", job)["spec"]
        assert spec["activeDeadlineSeconds"] >= 3600, job
        script = spec["template"]["spec"]["containers"][0]["command"][-1]
        first = next(line for line in script.splitlines() if line != "set -e")
        assert first.startswith("until "), job


def test_every_infrastructure_pod_is_named_in_its_server_certificate() -> None:
    """Clients dial kafka-0.kafka-headless (Kafka advertises it), and etcd's members dial
    each other by their pod names: each must be in the certificate (pki/identities.py)."""
    objs = overlay("kind")
    for name in ("etcd", "kafka", "postgres"):
        statefulset = find(objs, "StatefulSet", name)["spec"]
        for index in range(statefulset["replicas"]):
            pod = f"{name}-{index}.{statefulset['serviceName']}"
            assert pod in SERVER_NAMES[name], pod
        assert name in SERVER_NAMES[name] and "127.0.0.1" in SERVER_NAMES[name]

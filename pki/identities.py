"""Who the project's CA issues certificates to, and the names each server is dialled by."""

from __future__ import annotations

import ipaddress

from cryptography import x509

from shared.tls import ETCD, GATEWAY, OPERATOR

SERVICES = ("user", "product", "inventory", "payment", "order")
# The edge (gateway/) calls the services, the user service's OAuth2 port, etcd and
# PostgreSQL as itself. It serves plain HTTP behind the cluster's own edge (a
# port-forward, an Ingress), so its certificate is a client's only.
EDGE = (GATEWAY,)
# The parties below the gRPC ports. Each server proves the names its clients dial; a
# client's certificate name is its user in etcd (common-name authentication), its
# principal in Kafka (User:<name>). PostgreSQL's clients log in with passwords.
KAFKA = "kafka"
POSTGRES = "postgres"
# etcd's administrator (its user is "root"): only the step that switches etcd's
# authentication on and writes its roles uses it.
ETCD_ROOT = "root"
# Prometheus' target bridge, which reads the registry to find the services' /metrics.
PROMETHEUS_TARGETS = "prometheus-targets"
INFRASTRUCTURE = (ETCD, KAFKA, POSTGRES)
IDENTITIES = (*SERVICES, *EDGE, OPERATOR, *INFRASTRUCTURE, ETCD_ROOT, PROMETHEUS_TARGETS)

# The namespace and Services of deploy/k8s/: a server's certificate names every
# address a client dials it by, in a local stack (127.0.0.1) and in Kubernetes.
K8S_NAMESPACE = "shop"
LOOPBACK = ("localhost", "127.0.0.1")


def _cluster_names(service: str, statefulset_pods: int) -> list[str]:
    """The Service's names, and each StatefulSet pod's (<pod>.<service>-headless), short
    and qualified. The pods are named one by one: OpenSSL, which Python's clients use,
    takes no wildcard over a single label (``*.kafka-headless``)."""
    domains = ("", f".{K8S_NAMESPACE}.svc", f".{K8S_NAMESPACE}.svc.cluster.local")
    names = [f"{service}{domain}" for domain in domains]
    for index in range(statefulset_pods):
        names += [f"{service}-{index}.{service}-headless{domain}" for domain in domains]
    return names


# The replicas of deploy/k8s/infra/ (tests/k8s check the two agree).
SERVER_NAMES: dict[str, tuple[str, ...]] = {
    ETCD: (*_cluster_names("etcd", 3), *LOOPBACK),
    KAFKA: (*_cluster_names("kafka", 1), *LOOPBACK),
    POSTGRES: (*_cluster_names("postgres", 1), *LOOPBACK),
}

# The servers that read their key and certificate as one keystore file (Kafka's
# ssl.keystore.type=PEM takes one location); a Kubernetes Secret carries it as well.
KEYSTORE_IDENTITIES = (KAFKA,)


def subject_alternative_names(name: str) -> list[x509.GeneralName]:
    """A service's certificate names the service (callers check it, whatever address
    discovery gave them); an infrastructure server's names every address it is dialled by."""
    names: list[x509.GeneralName] = []
    for entry in SERVER_NAMES.get(name, (name,)):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            names.append(x509.DNSName(entry))
    return names


def serves(name: str) -> bool:
    # Services and the infrastructure serve and call (Kafka and etcd call their peers);
    # the gateway, the operator, etcd's root and Prometheus' bridge only call.
    return name in SERVICES or name in INFRASTRUCTURE

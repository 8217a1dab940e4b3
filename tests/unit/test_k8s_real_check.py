"""The pure parts of `make k8s-real-check`: certificates, claims, and what probes parse."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploy.tooling import k8s
from deploy.tooling.real_check import pki, probes
from deploy.tooling.real_check.volumes import pending_claims, volume_manifest


def completed(stdout: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], code, stdout, "")


def test_client_certificates_carry_the_user_and_groups_rbac_reads(tmp_path: Path) -> None:
    ca = pki.Authority(tmp_path)
    config = pki.kubeconfig(
        tmp_path / "kubelet",
        "https://192.0.2.2:6443",
        ca,
        pki.Identity("kubelet", "system:node:shop-node", ("system:nodes",)),
    )
    user = yaml.safe_load(config.read_text())["users"][0]["user"]
    cert = x509.load_pem_x509_certificate(Path(user["client-certificate"]).read_bytes())
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:shop-node"
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:nodes"
    ]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.issuer == ca.cert.subject
    assert oct(Path(user["client-key"]).stat().st_mode & 0o777) == "0o600"


def test_the_api_servers_certificate_names_the_kubernetes_service_ip(tmp_path: Path) -> None:
    ca = pki.Authority(tmp_path)
    cert_path, _ = ca.issue(
        "apiserver", "kube-apiserver", client=False, server_names=("10.96.0.1", "kubernetes")
    )
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.96.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["kubernetes"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]


def claim(name: str, phase: str = "Pending", storage_class: str = "standard") -> dict[str, object]:
    return {
        "metadata": {"namespace": "shop", "name": name, "uid": f"uid-{name}-0000"},
        "spec": {"storageClassName": storage_class, "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": phase},
    }


def test_only_pending_claims_of_the_default_class_get_a_volume() -> None:
    items = [
        claim("data-kafka-0"),
        claim("data-postgres-0", phase="Bound"),
        claim("other", storage_class="fast"),
    ]
    found = pending_claims(lambda *args, **kw: completed(json.dumps({"items": items})))
    assert [c["name"] for c in found] == ["data-kafka-0"]
    volume = json.loads(volume_manifest(found[0], Path("/v/kafka"), "shop-node"))
    assert volume["spec"]["claimRef"] == {
        "namespace": "shop",
        "name": "data-kafka-0",
        "uid": "uid-data-kafka-0-0000",
    }
    assert volume["spec"]["hostPath"]["path"] == "/v/kafka"
    terms = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["shop-node"]


def test_a_failing_api_server_means_no_claims_rather_than_a_crash() -> None:
    assert pending_claims(lambda *args, **kw: completed("", code=1)) == []


@dataclass(frozen=True)
class FakeKubectl(k8s.Kubectl):
    """Answers every command with one fixed output."""

    out: str = ""

    def __call__(
        self,
        *args: str,
        check: bool = True,
        quiet: bool = False,
        capture: bool = False,
        stdin: str | None = None,
    ) -> k8s.Ran:
        return k8s.Ran(True, self.out)


def test_topics_ignore_the_brokers_log_lines_on_stdout() -> None:
    out = (
        "[2026-12-07 14:07:40,935] INFO App info kafka.admin.client for adminclient-1\n"
        "\tbootstrap.servers = [localhost:9092]\n"
        "shop.orders.v1\n__consumer_offsets\nshop.payments.v1\n"
    )
    assert probes.topics(FakeKubectl("fake", out)) == {
        "shop.orders.v1",
        "__consumer_offsets",
        "shop.payments.v1",
    }


def test_registered_instances_are_counted_per_service() -> None:
    # `shopctl instances`, as the operator reads the registry in the shopctl pod.
    out = (
        "service  instance  address         version\n"
        "order    a1        10.0.0.1:50051  0.1.0\n"
        "order    b2        10.0.0.2:50051  0.1.0\n"
        "user     c3        10.0.0.3:50051  0.1.0\n"
    )
    assert probes.registered_instances(FakeKubectl("fake", out)) == {"order": 2, "user": 1}

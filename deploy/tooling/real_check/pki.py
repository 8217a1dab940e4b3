"""The node's own certificate authority: who each Kubernetes component is.

Every component proves itself with a certificate from this CA, as kubeadm sets it up:
the API server's serving certificate names the `kubernetes` Service's IP (pods reach
it there), the kubelet serves with its own, and each client's certificate carries the
user and group that RBAC and the Node authorizer know (``system:node:<name>`` in
``system:nodes``, ``system:kube-proxy``, ...). Nothing here is the shop's CA
(pki/): the cluster and the system it runs trust each other not at all.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LIFETIME = dt.timedelta(days=2)
Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Identity:
    """A client of the API server: its file name, user (CN) and groups (O)."""

    file: str
    user: str
    groups: tuple[str, ...] = ()


def _name(common: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, key: Key | rsa.RSAPrivateKey, cert: x509.Certificate | None) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".key").chmod(0o600)
    if cert is not None:
        path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class Authority:
    """A CA in ``folder`` (ca.crt, ca.key) that issues the node's certificates there."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = _name("shop-node CA")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        _write(folder / "ca", self.key, self.cert)

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    def issue(
        self,
        file: str,
        common: str,
        groups: tuple[str, ...] = (),
        *,
        server_names: tuple[str, ...] = (),
        client: bool = True,
    ) -> tuple[Path, Path]:
        """``file``.crt and ``file``.key; a server certificate when names are given."""
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common, groups))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        path = self.folder / file
        _write(path, key, cert)
        return path.with_suffix(".crt"), path.with_suffix(".key")

    def service_account_key(self) -> Path:
        """The RSA key the API server signs service-account tokens with."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(self.folder / "sa", key, None)
        return self.folder / "sa.key"


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def kubeconfig(path: Path, server: str, authority: Authority, identity: Identity) -> Path:
    """A kubeconfig for ``identity``: the CA to trust and its client certificate."""
    cert, key = authority.issue(identity.file, identity.user, identity.groups)
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: shop-node\n"
        f"clusters: [{{name: shop-node, cluster: {{server: '{server}', "
        f"certificate-authority: '{authority.ca_file}'}}}}]\n"
        f"users: [{{name: {identity.file}, user: {{client-certificate: '{cert}', "
        f"client-key: '{key}'}}}}]\n"
        f"contexts: [{{name: shop-node, context: {{cluster: shop-node, user: {identity.file}}}}}]\n"
    )
    path.chmod(0o600)
    return path

"""Mutual TLS: the project's own certificate authority, and gRPC credentials read from its files.

Every party proves who it is with a certificate this CA signed: each service (its
name is the certificate's DNS name, which callers check, because discovery gives
them only an address) and one ``operator`` for people and tools. Our own CA, not a
public one, because only our own parties may connect at all. Files are read again
when they change, so a renewed certificate reaches new connections without a restart.

Layout of a TLS dir (``.stack/<profile>/tls``, later a mounted Kubernetes Secret):
``ca.pem``, ``ca-key.pem``, and ``<name>.pem`` + ``<name>-key.pem`` per identity
(Kafka's server also ``kafka-keystore.pem``, both in one file).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.observability.tracing import client_interceptors

log = logging.getLogger(__name__)

SERVICES = ("user", "product", "inventory", "payment", "order")
OPERATOR = "operator"
# The parties below the gRPC ports. Each server proves the names its clients dial; a
# client's certificate name is its user in etcd (common-name authentication), its
# principal in Kafka (User:<name>). PostgreSQL's clients log in with passwords.
ETCD = "etcd"
KAFKA = "kafka"
POSTGRES = "postgres"
# etcd's administrator (its user is "root"): only the step that switches etcd's
# authentication on and writes its roles uses it.
ETCD_ROOT = "root"
# Prometheus' target bridge, which reads the registry to find the services' /metrics.
PROMETHEUS_TARGETS = "prometheus-targets"
INFRASTRUCTURE = (ETCD, KAFKA, POSTGRES)
IDENTITIES = (*SERVICES, OPERATOR, *INFRASTRUCTURE, ETCD_ROOT, PROMETHEUS_TARGETS)

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

CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=365)
# `ensure_authority` re-issues a certificate this close to its end.
RENEW_BEFORE = dt.timedelta(days=30)
# Tolerates a peer whose clock is a little behind ours.
BACKDATE = dt.timedelta(minutes=5)
# How often a client looks at its files; a renewal reaches new connections within this.
CLIENT_CHECK_SECONDS = 1.0

PrivateKey = ec.EllipticCurvePrivateKey


def ca_file(tls_dir: Path) -> Path:
    return tls_dir / "ca.pem"


def ca_key_file(tls_dir: Path) -> Path:
    return tls_dir / "ca-key.pem"


def cert_file(tls_dir: Path, name: str) -> Path:
    return tls_dir / f"{name}.pem"


def key_file(tls_dir: Path, name: str) -> Path:
    return tls_dir / f"{name}-key.pem"


def keystore_file(tls_dir: Path, name: str) -> Path:
    """Kafka's PEM keystore: the key (PKCS#8, unencrypted) and the certificate in one file."""
    return tls_dir / f"{name}-keystore.pem"


# The servers that read their key and certificate as one keystore file (Kafka's
# ssl.keystore.type=PEM takes one location); a Kubernetes Secret carries it as well.
KEYSTORE_IDENTITIES = (KAFKA,)


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# --- the authority ---------------------------------------------------------------------------


def ensure_authority(tls_dir: Path, names: Iterable[str] = IDENTITIES) -> list[str]:
    """Creates whatever is missing, broken or near its end; returns what it (re)issued.

    Safe to repeat. A crash leaves at worst a stray temp file, never a half-written
    one; a key that does not match its certificate, or a certificate of another CA,
    counts as missing.
    """
    tls_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(tls_dir)
    issued = []
    authority = _load_authority(tls_dir)
    if authority is None:
        authority = _issue_ca()
        _write_key(ca_key_file(tls_dir), authority[0])
        _write_cert(ca_file(tls_dir), authority[1])
        issued.append("ca")
    for name in names:
        if not _leaf_is_good(tls_dir, name, authority[1]):
            _write_leaf(tls_dir, name, authority)
            issued.append(name)
        if name in KEYSTORE_IDENTITIES:
            write_keystore(tls_dir, name)
    return issued


def write_keystore(tls_dir: Path, name: str) -> bool:
    """Writes ``<name>-keystore.pem`` from the key and certificate unless it already holds
    exactly them; returns whether it wrote. Key first: Kafka's PEM store wants both."""
    path = keystore_file(tls_dir, name)
    data = key_file(tls_dir, name).read_bytes() + cert_file(tls_dir, name).read_bytes()
    try:
        if path.read_bytes() == data:
            _ensure_private(path)
            return False
    except OSError:
        pass
    _write_atomic(path, data, 0o600)
    return True


def renew(tls_dir: Path, name: str) -> x509.Certificate:
    """A fresh key and certificate for ``name``, signed by the dir's CA; returns the certificate.

    Running servers and clients pick the new files up for their next connection.
    """
    authority = _load_authority(tls_dir)
    if authority is None:
        raise FileNotFoundError(f"no usable CA in {tls_dir}; run ensure_authority first")
    cert = _write_leaf(tls_dir, name, authority)
    if name in KEYSTORE_IDENTITIES:
        write_keystore(tls_dir, name)
    return cert


def _issue_ca() -> tuple[PrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shop"),
            x509.NameAttribute(NameOID.COMMON_NAME, "shop internal CA"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


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


def _serves(name: str) -> bool:
    # Services and the infrastructure serve and call (Kafka and etcd call their peers);
    # the operator, etcd's root and Prometheus' bridge only call.
    return name in SERVICES or name in INFRASTRUCTURE


def _issue_leaf(
    name: str, authority: tuple[PrivateKey, x509.Certificate]
) -> tuple[PrivateKey, x509.Certificate]:
    ca_key, ca_cert = authority
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if _serves(name):
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LEAF_LIFETIME)
        .add_extension(x509.SubjectAlternativeName(subject_alternative_names(name)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write_leaf(
    tls_dir: Path, name: str, authority: tuple[PrivateKey, x509.Certificate]
) -> x509.Certificate:
    key, cert = _issue_leaf(name, authority)
    # Between these two renames a reader sees a mismatched pair; readers check the
    # pair and keep what they had until both files agree.
    _write_key(key_file(tls_dir, name), key)
    _write_cert(cert_file(tls_dir, name), cert)
    return cert


def _load_authority(tls_dir: Path) -> tuple[PrivateKey, x509.Certificate] | None:
    try:
        cert = load_certificate(ca_file(tls_dir))
        key = serialization.load_pem_private_key(ca_key_file(tls_dir).read_bytes(), None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(cert, key):
        return None
    if _expiring(cert):
        return None
    _ensure_private(ca_key_file(tls_dir))
    return key, cert


def _leaf_is_good(tls_dir: Path, name: str, ca_cert: x509.Certificate) -> bool:
    try:
        cert = load_certificate(cert_file(tls_dir, name))
        key = serialization.load_pem_private_key(key_file(tls_dir, name).read_bytes(), None)
        cert.verify_directly_issued_by(ca_cert)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    if not _same_key(cert, key) or _expiring(cert) or not _names_match(cert, name):
        return False
    _ensure_private(key_file(tls_dir, name))
    return True


def _names_match(cert: x509.Certificate, name: str) -> bool:
    """A certificate whose names are not today's (a server dialled by a new name) is
    re-issued, like one near its end."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(san) == set(subject_alternative_names(name))


def _same_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der)


def _expiring(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE


def _ensure_private(path: Path) -> None:
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


def _write_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # Rename is atomic: a reader (or a crash) never sees half a file.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _remove_stale_temp_files(tls_dir: Path, older_than: float = 60.0) -> None:
    # Left by a crash mid-write; younger ones may belong to a writer still running.
    for temp in tls_dir.glob(".*.tmp"):
        try:
            if time.time() - temp.stat().st_mtime > older_than:
                temp.unlink()
        except FileNotFoundError:
            pass


# --- gRPC credentials ------------------------------------------------------------------------


class _Files:
    """One identity's key, certificate and CA, re-read only when a file changed."""

    def __init__(self, tls_dir: Path, name: str) -> None:
        self.paths = (key_file(tls_dir, name), cert_file(tls_dir, name), ca_file(tls_dir))
        self._seen: tuple[tuple[int, int, int], ...] | None = None
        self._lock = threading.Lock()  # the server's fetcher runs on gRPC's threads

    def _signature(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            stats = [p.stat() for p in self.paths]
        except OSError:
            return None
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def read_if_changed(self) -> tuple[bytes, bytes, bytes] | None:
        """(key, cert, ca) PEM if they changed since the last good read and form a pair."""
        with self._lock:
            signature = self._signature()
            if signature is None or signature == self._seen:
                return None
            try:
                key, cert, ca = (p.read_bytes() for p in self.paths)
                parsed = x509.load_pem_x509_certificate(cert)
                x509.load_pem_x509_certificates(ca)
                good = _same_key(parsed, serialization.load_pem_private_key(key, None))
            except (OSError, ValueError):
                good = False
            if not good:  # mid-renewal or broken: keep what we have, look again next time
                return None
            self._seen = signature
            return key, cert, ca

    def read(self) -> tuple[bytes, bytes, bytes]:
        files = self.read_if_changed()
        if files is None:
            raise FileNotFoundError(
                f"no matching key pair and CA at {', '.join(map(str, self.paths))}"
            )
        return files


def server_credentials(tls_dir: Path, name: str) -> grpc.ServerCredentials:
    """Serves ``name``'s certificate and requires a client certificate signed by the CA.

    gRPC asks the fetcher on every new connection; it answers None (keep the
    current configuration) unless a file changed.
    """
    files = _Files(tls_dir, name)
    key, cert, ca = files.read()

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        try:
            changed = files.read_if_changed()
        except Exception:  # never break the handshake of a connection over a reload
            log.exception("reading the TLS files of %s failed", name)
            return None
        if changed is None:
            return None
        log.info("TLS files of %s changed; new connections use them", name)
        return grpc.ssl_server_certificate_configuration([changed[:2]], changed[2])

    initial = grpc.ssl_server_certificate_configuration([(key, cert)], ca)
    # None means "unchanged" to gRPC, though its type stubs leave it out.
    fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], fetch)
    return grpc.dynamic_ssl_server_credentials(initial, fetcher, require_client_authentication=True)


def channel_options(service: str) -> list[tuple[str, str]]:
    """The server's certificate must name the service called, whatever its address."""
    return [("grpc.ssl_target_name_override", service)]


class ClientTLS:
    """A caller's identity for channels: its certificate and key, and the CA it trusts.

    ``credentials()`` returns a new object once the files changed (looked at no
    more than every ``check_seconds``); callers compare it to decide when to
    replace their channels.
    """

    def __init__(
        self, tls_dir: Path, name: str, *, check_seconds: float = CLIENT_CHECK_SECONDS
    ) -> None:
        self.tls_dir = tls_dir
        self.name = name
        self._files = _Files(tls_dir, name)
        self._credentials = self._build(self._files.read())
        self._check_seconds = check_seconds
        self._checked = time.monotonic()

    @classmethod
    def operator(cls, tls_dir: Path, **kwargs: float) -> ClientTLS:
        return cls(tls_dir, OPERATOR, **kwargs)

    @staticmethod
    def _build(files: tuple[bytes, bytes, bytes]) -> grpc.ChannelCredentials:
        key, cert, ca = files
        return grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=cert)

    def credentials(self) -> grpc.ChannelCredentials:
        now = time.monotonic()
        if now - self._checked >= self._check_seconds:
            self._checked = now
            self.reload()
        return self._credentials

    def reload(self) -> bool:
        """Looks at the files now; True if they changed and the credentials were rebuilt."""
        files = self._files.read_if_changed()
        if files is None:
            return False
        self._credentials = self._build(files)
        log.info("TLS files of %s changed; new channels use them", self.name)
        return True

    def channel(
        self, address: str, service: str, options: Sequence[tuple[str, str | int]] = ()
    ) -> grpc.aio.Channel:
        """A channel to one instance of ``service``, verifying that it is ``service``; its
        calls are traced (and carry the trace on) when this process traces."""
        return grpc.aio.secure_channel(
            address,
            self.credentials(),
            options=[*channel_options(service), *options],
            interceptors=client_interceptors(),
        )


# --- who is calling --------------------------------------------------------------------------


def identity_from_auth_context(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The peer's name from its certificate: the first DNS SAN, else the CN; None without TLS.

    Every service port requires and verifies a client certificate of our CA, so
    whatever name the handshake put here was verified.
    """
    if b"ssl" not in auth_context.get("transport_security_type", ()):
        return None
    for prop in ("peer_dns", "x509_subject_alternative_name", "x509_common_name"):
        for value in auth_context.get(prop, ()):
            return value.decode()
    return None


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The calling party, a service name or ``operator``; the user is in the JWT."""
    return identity_from_auth_context(context.auth_context())

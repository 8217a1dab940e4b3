"""Mutual TLS at run time: gRPC credentials read from a TLS dir, and who is calling.

Every party proves who it is with a certificate of the project's own CA (issued by
pki/, outside the runtime kit): each service (its name is the certificate's DNS name,
which callers check, because discovery gives them only an address), the ``gateway``
(the edge, a client only) and one ``operator`` for people and tools. Files are read
again when they change, so a renewed certificate reaches new connections without a
restart.

Layout of a TLS dir (``.stack/<profile>/tls``, later a mounted Kubernetes Secret):
``ca.pem``, and ``<name>.pem`` + ``<name>-key.pem`` per identity; what else the CA
keeps there is pki/'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from shared.observability.tracing import client_interceptors

log = logging.getLogger(__name__)

# The party of people and tools, which admin calls and the config center's writes take.
OPERATOR = "operator"
# The party of the edge (gateway/): the storefront and the REST API call the services as
# it, with the end user's token; the admin methods take it beside the operator.
GATEWAY = "gateway"
# The name etcd's server certificate carries, whatever address it is dialled at.
ETCD = "etcd"
# How often a client looks at its files; a renewal reaches new connections within this.
CLIENT_CHECK_SECONDS = 1.0


def ca_file(tls_dir: Path) -> Path:
    return tls_dir / "ca.pem"


def cert_file(tls_dir: Path, name: str) -> Path:
    return tls_dir / f"{name}.pem"


def key_file(tls_dir: Path, name: str) -> Path:
    return tls_dir / f"{name}-key.pem"


def same_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Whether ``key`` is the private half of ``cert``'s public key."""
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der)


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
                good = same_key(parsed, serialization.load_pem_private_key(key, None))
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
    """The calling party, a service name, ``gateway`` or ``operator``; the user is in the JWT."""
    return identity_from_auth_context(context.auth_context())

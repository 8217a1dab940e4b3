"""The project's own certificate authority: it issues every party's key and certificate.

The CA and the certificates live in a TLS dir (shared/tls.py reads them at run time;
this module writes them): ``ca-key.pem`` besides, and Kafka's server also
``kafka-keystore.pem`` (key and certificate in one file). Our own CA, not a public
one, because only our own parties may connect at all. The local stacks (devstack),
``python -m devstack.certs`` and the Kubernetes Secrets (deploy/tooling/k8s.py) all issue here.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.identities import IDENTITIES, KEYSTORE_IDENTITIES, serves, subject_alternative_names
from shared.tls import ca_file, cert_file, key_file, same_key

CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=365)
# `ensure_authority` re-issues a certificate this close to its end.
RENEW_BEFORE = dt.timedelta(days=30)
# Tolerates a peer whose clock is a little behind ours.
BACKDATE = dt.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey


def ca_key_file(tls_dir: Path) -> Path:
    return tls_dir / "ca-key.pem"


def keystore_file(tls_dir: Path, name: str) -> Path:
    """Kafka's PEM keystore: the key (PKCS#8, unencrypted) and the certificate in one file."""
    return tls_dir / f"{name}-keystore.pem"


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


def _issue_leaf(
    name: str, authority: tuple[PrivateKey, x509.Certificate]
) -> tuple[PrivateKey, x509.Certificate]:
    ca_key, ca_cert = authority
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if serves(name):
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
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not same_key(cert, key):
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
    if not same_key(cert, key) or _expiring(cert) or not _names_match(cert, name):
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

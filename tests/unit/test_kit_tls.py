"""The certificate authority's files, reloading, and the peer's name from an auth context."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from devstack.certs import app as certs_app
from pki import authority, identities
from shared import tls


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    authority.ensure_authority(tmp_path / "tls")
    return tmp_path / "tls"


def serial(path: Path) -> int:
    return authority.load_certificate(path).serial_number


def test_creates_a_ca_and_a_certificate_per_party_with_private_keys(tmp_path: Path) -> None:
    where = tmp_path / "tls"
    issued = authority.ensure_authority(where)
    assert issued == ["ca", *identities.IDENTITIES]
    names = {p.name for p in where.iterdir()}
    assert {"ca.pem", "ca-key.pem", "operator.pem", "operator-key.pem"} <= names
    for name in identities.IDENTITIES:
        cert = authority.load_certificate(tls.cert_file(where, name))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName)[0] == name
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == name
        cert.verify_directly_issued_by(authority.load_certificate(tls.ca_file(where)))
    for key in [
        authority.ca_key_file(where),
        *(tls.key_file(where, n) for n in identities.IDENTITIES),
    ]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_ensuring_again_changes_nothing(tls_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    assert authority.ensure_authority(tls_dir) == []
    assert {p.name: p.read_bytes() for p in tls_dir.iterdir()} == before


def test_a_broken_or_mismatched_file_is_replaced_and_a_stale_temp_file_removed(
    tls_dir: Path,
) -> None:
    ca_serial = serial(tls.ca_file(tls_dir))
    tls.cert_file(tls_dir, "product").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB")  # torn
    tls.key_file(tls_dir, "order").write_bytes(tls.key_file(tls_dir, "user").read_bytes())
    stale = tls_dir / ".payment.pem.123.abcd.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert authority.ensure_authority(tls_dir) == ["product", "order"]
    assert serial(tls.ca_file(tls_dir)) == ca_serial
    assert not stale.exists()


def test_a_lost_ca_reissues_every_certificate(tls_dir: Path) -> None:
    authority.ca_key_file(tls_dir).unlink()
    assert authority.ensure_authority(tls_dir) == ["ca", *identities.IDENTITIES]


def test_renew_issues_a_new_key_and_certificate_under_the_same_ca(tls_dir: Path) -> None:
    old_key = tls.key_file(tls_dir, "product").read_bytes()
    old = serial(tls.cert_file(tls_dir, "product"))
    cert = authority.renew(tls_dir, "product")
    assert cert.serial_number == serial(tls.cert_file(tls_dir, "product")) != old
    assert tls.key_file(tls_dir, "product").read_bytes() != old_key
    assert stat.S_IMODE(tls.key_file(tls_dir, "product").stat().st_mode) == 0o600
    assert authority.ensure_authority(tls_dir) == []  # still a good pair of the same CA


def test_the_cli_renews_and_shows(tls_dir: Path) -> None:
    old = serial(tls.cert_file(tls_dir, "operator"))
    result = CliRunner().invoke(certs_app, ["renew", "operator", "--dir", str(tls_dir)])
    assert result.exit_code == 0, result.output
    new = serial(tls.cert_file(tls_dir, "operator"))
    assert new != old and f"{new:x}" in result.output
    shown = CliRunner().invoke(certs_app, ["show", "--dir", str(tls_dir)])
    assert shown.exit_code == 0 and "operator.pem" in shown.output
    refused = CliRunner().invoke(certs_app, ["renew", "nobody", "--dir", str(tls_dir)])
    assert refused.exit_code != 0


def test_client_credentials_follow_a_renewal_but_not_a_half_written_pair(tls_dir: Path) -> None:
    client = tls.ClientTLS.operator(tls_dir, check_seconds=0)
    first = client.credentials()
    assert client.credentials() is first  # unchanged files: the same credentials
    # A key without its certificate yet (the moment between renew's two renames).
    other = tls_dir.parent / "other"
    authority.ensure_authority(other)
    tls.key_file(tls_dir, "operator").write_bytes(tls.key_file(other, "operator").read_bytes())
    assert client.credentials() is first
    authority.renew(tls_dir, "operator")
    assert client.credentials() is not first


def test_client_credentials_are_looked_at_no_more_than_every_check_interval(
    tls_dir: Path,
) -> None:
    client = tls.ClientTLS.operator(tls_dir, check_seconds=3600)
    first = client.credentials()
    authority.renew(tls_dir, "operator")
    assert client.credentials() is first
    assert client.reload()
    assert client.credentials() is not first


def auth_context(**props: list[bytes]) -> dict[str, list[bytes]]:
    return {"transport_security_type": [b"ssl"], **props}


def test_identity_is_the_certificates_dns_name() -> None:
    context = auth_context(
        x509_common_name=[b"operator"],
        x509_subject_alternative_name=[b"operator"],
        peer_dns=[b"operator"],
    )
    assert tls.identity_from_auth_context(context) == "operator"
    assert tls.identity_from_auth_context(auth_context(peer_dns=[b"order"])) == "order"


def test_identity_falls_back_to_the_san_then_the_common_name() -> None:
    assert (
        tls.identity_from_auth_context(auth_context(x509_subject_alternative_name=[b"product"]))
        == "product"
    )
    assert tls.identity_from_auth_context(auth_context(x509_common_name=[b"user"])) == "user"


def test_no_identity_without_tls_or_without_a_certificate() -> None:
    assert tls.identity_from_auth_context({}) is None
    assert tls.identity_from_auth_context({"transport_security_type": [b"insecure"]}) is None
    assert tls.identity_from_auth_context(auth_context()) is None

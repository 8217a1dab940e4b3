"""The gateway's party below the gRPC ports (ops/trust/rights.py, pki/): a client
certificate, no Kafka at all, and a PostgreSQL role of its own owning its database."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from devstack.postgres import DATABASES
from devstack.postgres_auth import hba
from ops.trust import rights
from ops.trust.kafka_acls import covered_principals, desired_acls
from ops.trust.postgres_roles import MANAGED_ROLES
from pki import identities
from pki.authority import ensure_authority
from shared.tls import GATEWAY, cert_file


def test_the_gateway_is_a_client_identity_of_the_ca(tmp_path: Path) -> None:
    assert GATEWAY in identities.IDENTITIES and GATEWAY not in identities.SERVICES
    assert not identities.serves(GATEWAY)
    ensure_authority(tmp_path, [GATEWAY])
    cert = x509.load_pem_x509_certificate(cert_file(tmp_path, GATEWAY).read_bytes())
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [GATEWAY]  # its party, to the services


def test_the_gateway_has_no_kafka_right_and_any_acl_naming_it_is_removed() -> None:
    assert not [g for g in rights.KAFKA_GRANTS if g.principal == GATEWAY]
    assert not [a for a in desired_acls() if a.principal == f"User:{GATEWAY}"]
    assert f"User:{GATEWAY}" in covered_principals()
    assert GATEWAY not in rights.KAFKA_SUPER_USERS


def test_the_gateway_owns_a_database_of_its_own_and_reaches_no_other() -> None:
    assert rights.PG_ROLES[GATEWAY] == "shop_gateway" == rights.pg_database(GATEWAY)
    assert "shop_gateway" in MANAGED_ROLES
    assert DATABASES[GATEWAY] == "shop_gateway"
    assert GATEWAY not in rights.AUDITED
    # pg_hba: its role only into the database of its own name (sameuser), over TLS.
    (sameuser,) = [line.split() for line in hba("127.0.0.1").splitlines() if "sameuser" in line]
    assert sameuser[0] == "hostssl" and "shop_gateway" in sameuser[2].split(",")

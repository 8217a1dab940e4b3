"""PostgreSQL below the gRPC ports: TLS only, a password each, a service only in its database."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import struct
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest
from cryptography import x509

from devstack.config import HOST
from devstack.stack import Stack
from ops.trust.postgres_roles import apply, read_password
from ops.trust.rights import PG_ADMIN, PG_AUDITOR, PG_ROLES, pg_database
from pki.authority import ensure_authority, renew
from pki.identities import POSTGRES
from services.product.main import SERVICE as PRODUCT
from services.product.settings import ProductSettings
from tests.support.services import recreate_database

pytestmark = pytest.mark.integration

ROLES = (PG_ADMIN, *PG_ROLES.values())


def without_tls(dsn: str) -> str:
    return dsn.replace("sslmode=verify-full", "sslmode=disable")


def dsn_of(stack: Stack, role: str, db: str | None = None) -> str:
    if role == PG_ADMIN:
        return stack.pg_dsn(db or "postgres")
    return stack.pg_service_dsn(role.removeprefix("shop_"), db)


async def whoami(dsn: str) -> tuple[str, str, bool]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT current_user, current_database(),"
            " (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl"
        )
        assert row is not None
        return row[0], row[1], row[2]
    finally:
        await conn.close()


@pytest.mark.parametrize("service", list(PG_ROLES))
async def test_each_service_logs_in_over_tls_into_its_own_database(
    stack: Stack, service: str
) -> None:
    assert await whoami(stack.pg_service_dsn(service)) == (
        PG_ROLES[service],
        pg_database(service),
        True,
    )


@pytest.mark.parametrize("role", ROLES)
async def test_a_connection_without_tls_is_refused_for_every_role(stack: Stack, role: str) -> None:
    db = "postgres" if role == PG_ADMIN else role
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError) as refused:
        await asyncpg.connect(without_tls(dsn_of(stack, role, db)), timeout=10)
    assert f'user "{role}", database "{db}", no encryption' in str(refused.value)
    assert "pg_hba.conf rejects connection" in str(refused.value)


@pytest.mark.parametrize("role", ROLES)
async def test_a_wrong_password_is_refused(stack: Stack, role: str) -> None:
    dsn = re.sub(
        rf"^postgresql://{role}:[^@]+@", f"postgresql://{role}:wrong@", dsn_of(stack, role)
    )
    with pytest.raises(asyncpg.InvalidPasswordError, match=f'for user "{role}"'):
        await asyncpg.connect(dsn, timeout=10)


async def test_a_service_role_cannot_enter_another_database(stack: Stack) -> None:
    with pytest.raises(
        asyncpg.InvalidAuthorizationSpecificationError,
        match='user "shop_product", database "shop_order", SSL encryption',
    ):
        await asyncpg.connect(stack.pg_service_dsn("product", "shop_order"), timeout=10)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(stack.pg_service_dsn("product", "postgres"), timeout=10)


async def test_no_role_has_rights_on_another_database(stack: Stack) -> None:
    # Beyond pg_hba.conf: even a connection the hba let through would find no CONNECT.
    conn = await asyncpg.connect(stack.pg_dsn("postgres"), timeout=10)
    try:
        rights = {
            (r["role"], r["db"]): (r["connect"], r["create"], r["temp"])
            for r in await conn.fetch(
                "SELECT r.rolname AS role, d.datname AS db,"
                " has_database_privilege(r.oid, d.oid, 'CONNECT') AS connect,"
                " has_database_privilege(r.oid, d.oid, 'CREATE') AS create,"
                " has_database_privilege(r.oid, d.oid, 'TEMP') AS temp"
                " FROM pg_roles r CROSS JOIN pg_database d"
                " WHERE r.rolname = ANY($1::text[]) AND d.datname = ANY($2::text[])",
                list(PG_ROLES.values()),
                [*(pg_database(s) for s in PG_ROLES), "postgres"],
            )
        }
        attributes = await conn.fetch(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls"
            " FROM pg_roles WHERE rolname = ANY($1::text[])",
            list(PG_ROLES.values()),
        )
        owners = {
            r[0]: r[1]
            for r in await conn.fetch(
                "SELECT datname, pg_get_userbyid(datdba) FROM pg_database"
                " WHERE datname = ANY($1::text[])",
                [pg_database(s) for s in PG_ROLES],
            )
        }
    finally:
        await conn.close()
    assert len(rights) == len(PG_ROLES) * (len(PG_ROLES) + 1)
    for (role, db), granted in rights.items():
        assert granted == ((True, True, True) if db == role else (False, False, False)), (role, db)
    assert len(attributes) == len(PG_ROLES)
    assert not any(any(row[1:]) for row in attributes)
    assert owners == {pg_database(s): role for s, role in PG_ROLES.items()}


async def test_a_server_certificate_of_another_ca_is_not_trusted(
    stack: Stack, tmp_path: Path
) -> None:
    ensure_authority(tmp_path, ())  # only a CA, which never signed the server's certificate
    dsn = re.sub(
        r"sslrootcert=[^&]+", f"sslrootcert={quote(str(tmp_path / 'ca.pem'))}", stack.pg_dsn("x")
    )
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await asyncpg.connect(dsn, timeout=10)


async def test_the_service_role_owns_what_its_migrations_create(stack: Stack) -> None:
    dsn = await recreate_database(stack, "product")
    applied = await PRODUCT.migrate(ProductSettings(pg_dsn=dsn))
    conn = await asyncpg.connect(stack.pg_dsn("shop_product"), timeout=10)
    try:
        owners = await conn.fetch(
            "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S', 'v')"
        )
        versions = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        routines = await conn.fetch(
            "SELECT pg_get_userbyid(proowner) FROM pg_proc"
            " WHERE pronamespace = 'public'::regnamespace"
        )
    finally:
        await conn.close()
    assert versions == set(applied) and "0001_products" in versions
    assert {r["relname"] for r in owners} >= {"products", "schema_migrations", "outbox"}
    assert {r["owner"] for r in owners} == {"shop_product"}
    assert routines and {r[0] for r in routines} == {"shop_product"}


async def test_what_the_administrator_created_is_handed_to_the_service_role(stack: Stack) -> None:
    # A database from before the roles existed: tables, a serial, a view, a function and
    # a type, all the administrator's; applying the rights gives them to the service.
    await recreate_database(stack, "payment")
    admin = await asyncpg.connect(stack.pg_dsn("shop_payment"), timeout=10)
    try:
        await admin.execute(
            "CREATE TYPE old_state AS ENUM ('a', 'b');"
            "CREATE TABLE old_rows (id serial PRIMARY KEY, state old_state);"
            "INSERT INTO old_rows (state) VALUES ('a'), ('b');"
            "CREATE VIEW old_view AS SELECT id FROM old_rows;"
            "CREATE FUNCTION old_fn() RETURNS int LANGUAGE sql AS 'SELECT 1';"
        )
        passwords = {r: read_password(stack.postgres.passwords_dir, r) for r in PG_ROLES.values()}
        done = await apply(stack.pg_dsn("postgres"), passwords, ["payment"])
        again = await apply(stack.pg_dsn("postgres"), passwords, ["payment"])
        owners = {
            r[0]: r[1]
            for r in await admin.fetch(
                "SELECT relname, pg_get_userbyid(relowner) FROM pg_class"
                " WHERE relnamespace = 'public'::regnamespace"
                " UNION ALL SELECT proname, pg_get_userbyid(proowner) FROM pg_proc"
                " WHERE pronamespace = 'public'::regnamespace"
                " UNION ALL SELECT typname, pg_get_userbyid(typowner) FROM pg_type"
                " WHERE typnamespace = 'public'::regnamespace AND typtype = 'e'"
            )
        }
    finally:
        await admin.close()
    assert "4 objects in shop_payment now owned by shop_payment" in done
    assert again == []
    assert set(owners) >= {"old_rows", "old_rows_id_seq", "old_rows_pkey", "old_view", "old_fn"}
    assert set(owners.values()) == {"shop_payment"}
    service = await asyncpg.connect(stack.pg_service_dsn("payment"), timeout=10)
    try:
        await service.execute("INSERT INTO old_rows (state) VALUES ('a')")
        assert await service.fetchval("SELECT count(*) FROM old_view") == 3
    finally:
        await service.close()
    await recreate_database(stack, "payment")


def served_certificate(port: int) -> x509.Certificate:
    """The certificate PostgreSQL presents, after its SSLRequest handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=5) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_a_renewed_server_certificate_is_served_after_a_refresh(stack: Stack) -> None:
    before = served_certificate(stack.postgres.port)
    renewed = renew(stack.tls_dir, POSTGRES)
    assert renewed.serial_number != before.serial_number
    assert stack.postgres.refresh() is True
    for _ in range(100):  # the reload is asynchronous
        if served_certificate(stack.postgres.port).serial_number == renewed.serial_number:
            break
        await asyncio.sleep(0.1)
    assert served_certificate(stack.postgres.port).serial_number == renewed.serial_number
    assert await whoami(stack.pg_service_dsn("order")) == ("shop_order", "shop_order", True)
    assert stack.postgres.refresh() is False  # nothing changed since


async def test_the_auditor_reads_the_saga_databases_and_can_change_nothing(stack: Stack) -> None:
    password = read_password(stack.postgres.passwords_dir, PG_AUDITOR)
    ca = quote(str(stack.tls_dir / "ca.pem"))

    def auditor(db: str) -> str:
        host, port = HOST, stack.postgres.port
        return f"postgresql://{PG_AUDITOR}:{password}@{host}:{port}/{db}?sslmode=verify-full&sslrootcert={ca}"

    conn = await asyncpg.connect(auditor("shop_order"), timeout=10)
    try:
        before = await conn.fetchval("SELECT count(*) FROM orders")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM orders")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE forged (id int)")
        assert await conn.fetchval("SELECT count(*) FROM orders") == before
    finally:
        await conn.close()
    for other in ("shop_user", "shop_product", "postgres"):
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match=r"pg_hba\.conf"):
            await asyncpg.connect(auditor(other), timeout=10)

"""PostgreSQL's roles: one per service, owning its database and nothing else.

Applied as the administrator (``PG_ADMIN``) by devstack on every start and by a
Kubernetes Job (``python -m ops.trust postgres``); every step is safe to repeat.
Passwords live one per file, named after the role, in a passwords dir (local:
``.stack/<profile>/secrets/postgres``, Kubernetes: a mounted Secret).

Passwords reach the server only as SCRAM verifiers computed here, so the plaintext
never appears in a statement the server could log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import asyncpg

from ops.secret_files import ensure_secret_file, private_dir
from ops.trust.rights import AUDITED, PG_ADMIN, PG_AUDITOR, PG_ROLES, pg_database

SCRAM_ITERATIONS: Final = 4096
# The roles `apply` makes; the administrator exists from initdb on.
MANAGED_ROLES: Final = (*PG_ROLES.values(), PG_AUDITOR)
ALL_ROLES: Final = (PG_ADMIN, *MANAGED_ROLES)

# --- passwords -------------------------------------------------------------------------------


def password_file(passwords_dir: Path, role: str) -> Path:
    return passwords_dir / role


def read_password(passwords_dir: Path, role: str) -> str:
    path = password_file(passwords_dir, role)
    if path.is_dir():  # a Kubernetes Secret mounted as a folder, its key `password`
        path = path / "password"
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        raise ValueError(f"no password for PostgreSQL role {role!r}: {path} is missing") from None
    if not password:
        raise ValueError(f"the password file {path} of PostgreSQL role {role!r} is empty")
    return password


def ensure_passwords(passwords_dir: Path, roles: Iterable[str] = ALL_ROLES) -> dict[str, str]:
    """Every role's password, generating the missing ones (files 0600 in a 0700 dir)."""
    private_dir(passwords_dir)
    passwords = {}
    for role in roles:
        ensure_secret_file(password_file(passwords_dir, role), lambda: secrets.token_hex(24) + "\n")
        passwords[role] = read_password(passwords_dir, role)
    return passwords


# --- SCRAM verifiers -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """What PostgreSQL stores for ``password`` with password_encryption = scram-sha-256."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    stored, server = _keys(password, salt, SCRAM_ITERATIONS)
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{_b64(salt)}${_b64(stored)}:{_b64(server)}"


def scram_matches(verifier: str | None, password: str) -> bool:
    """Whether a stored verifier (pg_authid.rolpassword) is the one of ``password``."""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        head, keys = verifier.removeprefix("SCRAM-SHA-256$").split("$", 1)
        iterations, salt = head.split(":", 1)
        stored, server = keys.split(":", 1)
        expected = _keys(password, base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected[0], base64.b64decode(stored)) and hmac.compare_digest(
        expected[1], base64.b64decode(server)
    )


# --- applying --------------------------------------------------------------------------------


async def set_password(conn: asyncpg.Connection, role: str, password: str) -> bool:
    """Sets the role's password unless it already is ``password``; returns whether it did."""
    current = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
    if scram_matches(current, password):
        return False
    sql = await conn.fetchval(
        "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
        role,
        scram_verifier(password),
    )
    await conn.execute(sql)
    return True


async def _quote(conn: asyncpg.Connection, template: str, *names: str) -> str:
    """``template`` with each %I filled by a quoted identifier (server-side format())."""
    args = ", ".join(f"${i + 1}::text" for i in range(len(names)))
    return str(await conn.fetchval(f"SELECT format('{template}', {args})", *names))


async def ensure_role(conn: asyncpg.Connection, role: str, password: str) -> list[str]:
    """A login role with no attribute beyond LOGIN, and the given password."""
    done = []
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        await conn.execute(await _quote(conn, "CREATE ROLE %I LOGIN", role))
        done.append(f"created role {role}")
    await conn.execute(
        await _quote(
            conn,
            "ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
            role,
        )
    )
    if await set_password(conn, role, password):
        done.append(f"set the password of {role}")
    return done


async def ensure_database(conn: asyncpg.Connection, database: str, owner: str) -> list[str]:
    """``database`` owned by ``owner``, which alone (and superusers) may connect to it."""
    done = []
    current = await conn.fetchval(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database
    )
    if current is None:
        try:
            await conn.execute(await _quote(conn, "CREATE DATABASE %I OWNER %I", database, owner))
            done.append(f"created database {database}")
        except asyncpg.DuplicateDatabaseError:
            pass  # created concurrently: its owner is set below
        current = await conn.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database
        )
    if current != owner:
        await conn.execute(await _quote(conn, "ALTER DATABASE %I OWNER TO %I", database, owner))
        done.append(f"database {database} now owned by {owner}")
    await conn.execute(await _quote(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database))
    await conn.execute(await _quote(conn, "GRANT CONNECT ON DATABASE %I TO %I", database, owner))
    # A database made again (the tests do) keeps the audit's right to open it.
    audited = {pg_database(service) for service in AUDITED}
    if database in audited and await conn.fetchval(
        "SELECT 1 FROM pg_roles WHERE rolname = $1", PG_AUDITOR
    ):
        grant = "GRANT CONNECT ON DATABASE %I TO %I"
        await conn.execute(await _quote(conn, grant, database, PG_AUDITOR))
    return done


# Objects in the database's own schemas that are not the role's (extensions' members
# aside). Tables come first: ALTER TABLE also moves their indexes and the sequences of
# their serial columns, which cannot be moved on their own.
_FOREIGN_RELATIONS = """
SELECT c.relkind::text AS relkind, format('%I.%I', n.nspname, c.relname) AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
  AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
ORDER BY c.relkind IN ('r', 'p') DESC
"""
_RELKIND: Final = {
    "r": "TABLE",
    "p": "TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
    "f": "FOREIGN TABLE",
}
_FOREIGN_ROUTINES = """
SELECT p.oid::regprocedure::text AS name
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
  AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
"""
# Enums, domains, ranges and free-standing composite types (not a table's row type).
_FOREIGN_TYPES = """
SELECT t.oid::regtype::text AS name
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE t.typowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
  AND (t.typtype IN ('e', 'd', 'r') OR c.relkind = 'c')
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
  AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
"""
_FOREIGN_SCHEMAS = """
SELECT format('%I', nspname) AS name FROM pg_namespace
WHERE nspowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
  AND nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public')
"""


async def hand_over_objects(conn: asyncpg.Connection, owner: str) -> int:
    """Gives ``owner`` what others own in this connection's database; returns how many.

    For databases whose tables were created by the administrator before the service
    roles existed. REASSIGN OWNED cannot do it: the administrator is the bootstrap
    superuser, whose objects include the system's own.
    """
    moved = 0
    quoted_owner = await _quote(conn, "%I", owner)
    for row in await conn.fetch(_FOREIGN_SCHEMAS, owner):
        await conn.execute(f"ALTER SCHEMA {row['name']} OWNER TO {quoted_owner}")
        moved += 1
    for row in await conn.fetch(_FOREIGN_RELATIONS, owner):
        kind = _RELKIND[row["relkind"]]
        # A serial's sequence may already have followed its table in this loop.
        still = await conn.fetchval(
            "SELECT relowner <> (SELECT oid FROM pg_roles WHERE rolname = $2)"
            " FROM pg_class WHERE oid = $1::regclass",
            row["name"],
            owner,
        )
        if still:
            await conn.execute(f"ALTER {kind} {row['name']} OWNER TO {quoted_owner}")
            moved += 1
    for row in await conn.fetch(_FOREIGN_ROUTINES, owner):
        await conn.execute(f"ALTER ROUTINE {row['name']} OWNER TO {quoted_owner}")
        moved += 1
    for row in await conn.fetch(_FOREIGN_TYPES, owner):
        await conn.execute(f"ALTER TYPE {row['name']} OWNER TO {quoted_owner}")
        moved += 1
    return moved


async def ensure_auditor(conn: asyncpg.Connection, password: str) -> list[str]:
    """The audit's role: reads every table of the audited databases (PostgreSQL's own
    pg_read_all_data), writes nothing, and may open no other database."""
    done = await ensure_role(conn, PG_AUDITOR, password)
    await conn.execute(await _quote(conn, "GRANT pg_read_all_data TO %I", PG_AUDITOR))
    for service in AUDITED:  # its CONNECT, which ensure_database gives once the role exists
        done += await ensure_database(conn, pg_database(service), PG_ROLES[service])
    return done


def _with_database(admin_dsn: str, database: str) -> str:
    """The admin DSN with its database replaced (query string kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def apply(
    admin_dsn: str, passwords: Mapping[str, str], services: Iterable[str] = PG_ROLES
) -> list[str]:
    """Roles, databases, CONNECT rights and ownership for ``services``; returns what changed.

    ``admin_dsn`` is the administrator's DSN to any database; ``passwords`` maps every
    service role (and optionally the administrator) to its password.
    """
    done: list[str] = []
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        if PG_ADMIN in passwords and await set_password(conn, PG_ADMIN, passwords[PG_ADMIN]):
            done.append(f"set the password of {PG_ADMIN}")
        # The maintenance database is the administrator's alone, too.
        await conn.execute("REVOKE ALL ON DATABASE postgres FROM PUBLIC")
        for service in services:
            role = PG_ROLES[service]
            if role not in passwords:
                raise ValueError(f"no password given for PostgreSQL role {role!r}")
            done += await ensure_role(conn, role, passwords[role])
            done += await ensure_database(conn, pg_database(service), role)
        if PG_AUDITOR in passwords:
            done += await ensure_auditor(conn, passwords[PG_AUDITOR])
    finally:
        await conn.close()
    for service in services:
        database, role = pg_database(service), PG_ROLES[service]
        conn = await asyncpg.connect(_with_database(admin_dsn, database), timeout=10)
        try:
            if moved := await hand_over_objects(conn, role):
                done.append(f"{moved} objects in {database} now owned by {role}")
        finally:
            await conn.close()
    return done

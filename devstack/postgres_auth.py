"""PostgreSQL's TLS files, pg_hba.conf and the administrator's password, for devstack.

The server reads its key only if the key belongs to the OS user it runs as and nobody
else may read it, while the profile's TLS dir belongs to whoever ran devstack: so the
server's certificate, key and the CA are copied into the data dir, on every start and
whenever they changed (a SIGHUP makes the server re-read them).
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from devstack.process import RunAs, StackError
from ops.trust.postgres_roles import scram_matches, scram_verifier
from ops.trust.rights import AUDITED, PG_ADMIN, PG_AUDITOR, PG_ROLES, pg_database
from pki.identities import POSTGRES
from shared.tls import ca_file, cert_file, key_file

log = logging.getLogger("devstack")

TLS_SUBDIR: Final = "tls"
SERVER_CERT: Final = "server.pem"
SERVER_KEY: Final = "server-key.pem"
CA_CERT: Final = "ca.pem"
# The verifier of the administrator's password as devstack last set it: a cluster
# without it (initdb'ed with trust by an older devstack) or with another password's
# gets the current one before it accepts connections again.
ADMIN_MARKER: Final = "devstack-admin.scram"

SSL_CONF: Final = f"""\
ssl = on
ssl_cert_file = '{TLS_SUBDIR}/{SERVER_CERT}'
ssl_key_file = '{TLS_SUBDIR}/{SERVER_KEY}'
ssl_ca_file = '{TLS_SUBDIR}/{CA_CERT}'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
"""


def hba(host: str, service_roles: Sequence[str] = tuple(PG_ROLES.values())) -> str:
    """TLS and a password for everyone; a service role only into its own database.

    Rules match top-down and the first match decides, so the rejections come first
    (without TLS) and last (anyone else, anywhere else).
    """
    address = f"{host}/32"
    audited = ",".join(pg_database(service) for service in AUDITED)
    return (
        "# Written by devstack on every start; change devstack/postgres_auth.py instead.\n"
        "# TYPE     DATABASE  USER  ADDRESS  METHOD\n"
        "local      all       all            reject\n"
        "hostnossl  all       all   all      reject\n"
        f"hostssl    all       {PG_ADMIN}  {address}  scram-sha-256\n"
        f"hostssl    sameuser  {','.join(service_roles)}  {address}  scram-sha-256\n"
        f"hostssl    {audited}  {PG_AUDITOR}  {address}  scram-sha-256\n"
        "host       all       all   all      reject\n"
    )


# bench-plain only (the baseline of `make bench-trust`): no TLS, no password asked.
PLAINTEXT_CONF: Final = "ssl = off\npassword_encryption = 'scram-sha-256'\n"


def plaintext_hba(host: str) -> str:
    """bench-plain's pg_hba.conf: TCP on loopback without TLS, trusted (no password)."""
    return (
        "# Written by devstack on every start; change devstack/postgres_auth.py instead.\n"
        "# bench-plain: the plaintext baseline of `make bench-trust`, never a real stack.\n"
        "local      all       all            reject\n"
        f"host       all       all   {host}/32  trust\n"
    )


def _owned(path: Path, run_as: RunAs | None, mode: int) -> None:
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
    os.chmod(path, mode)


def write_hba(data_dir: Path, host: str, run_as: RunAs | None, *, plaintext: bool = False) -> bool:
    """Writes pg_hba.conf (``plaintext``: bench-plain's); returns whether it changed."""
    path = data_dir / "pg_hba.conf"
    text = plaintext_hba(host) if plaintext else hba(host)
    changed = not path.is_file() or path.read_text() != text
    if changed:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        _owned(tmp, run_as, 0o600)
        tmp.replace(path)
    return changed


def sync_tls(tls_dir: Path, data_dir: Path, run_as: RunAs | None) -> bool:
    """Copies the server's certificate, key and the CA into the data dir if they differ.

    Returns whether anything changed (then a running server needs a reload).
    """
    sources = {
        SERVER_CERT: cert_file(tls_dir, POSTGRES),
        SERVER_KEY: key_file(tls_dir, POSTGRES),
        CA_CERT: ca_file(tls_dir),
    }
    for source in sources.values():
        if not source.is_file():
            raise StackError(
                f"PostgreSQL's TLS file {source} is missing; `python -m devstack up` creates it"
            )
    target_dir = data_dir / TLS_SUBDIR
    target_dir.mkdir(mode=0o700, exist_ok=True)
    _owned(target_dir, run_as, 0o700)
    changed = False
    for name, source in sources.items():
        target = target_dir / name
        if target.is_file() and filecmp.cmp(source, target, shallow=False):
            continue
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        _owned(tmp, run_as, 0o600)
        tmp.replace(target)
        changed = True
    return changed


def admin_password_is_set(data_dir: Path, password: str) -> bool:
    try:
        verifier = (data_dir / ADMIN_MARKER).read_text().strip()
    except FileNotFoundError:
        return False
    return scram_matches(verifier, password)


def set_admin_password(
    postgres_bin: Path, data_dir: Path, password: str, run_as: RunAs | None
) -> None:
    """Sets the administrator's password with the server stopped (single-user mode).

    No network listener runs meanwhile, so an old cluster initdb'ed with ``trust`` is
    never reachable without a password while it changes over. The password goes in as
    a SCRAM verifier on stdin, never in argv or a statement the server logs.
    """
    verifier = scram_verifier(password)
    sql = f"ALTER ROLE \"{PG_ADMIN}\" LOGIN PASSWORD '{verifier}';\n"
    try:
        result = subprocess.run(
            [str(postgres_bin), "--single", "-D", str(data_dir), "-c", "ssl=off", "postgres"],
            input=sql,
            capture_output=True,
            text=True,
            cwd=data_dir,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
            timeout=120,
            check=False,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError("postgres: setting the administrator's password timed out") from exc
    output = (result.stdout + result.stderr).replace(verifier, "<verifier>")
    if result.returncode != 0 or "ERROR:" in output or "FATAL:" in output:
        raise StackError(
            f"postgres: setting the administrator's password failed (exit "
            f"{result.returncode}):\n{output.strip()}"
        )
    mark_admin_password(data_dir, password, run_as, verifier)
    log.info("postgres: the administrator %s now logs in with its password", PG_ADMIN)


def mark_admin_password(
    data_dir: Path, password: str, run_as: RunAs | None, verifier: str | None = None
) -> None:
    """Records that the cluster's administrator has ``password`` (see ADMIN_MARKER)."""
    marker = data_dir / ADMIN_MARKER
    marker.write_text((verifier or scram_verifier(password)) + "\n")
    _owned(marker, run_as, 0o600)

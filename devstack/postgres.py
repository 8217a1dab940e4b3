"""PostgreSQL: one cluster per profile, one database and role per service (and the
gateway), TLS only.

Clients connect over TCP with TLS (verify-full against the profile's CA) and a
password: the administrator ``shop`` (tests and tools), or a service's own role,
which reaches only its own database (devstack/postgres_auth.py, ops/trust).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
from pathlib import Path
from typing import Final
from urllib.parse import quote

from devstack.component import Component, run_coro
from devstack.config import HOST
from devstack.install import ensure_postgres, find_pg_bindir
from devstack.postgres_auth import (
    PLAINTEXT_CONF,
    SSL_CONF,
    admin_password_is_set,
    mark_admin_password,
    set_admin_password,
    sync_tls,
    write_hba,
)
from devstack.process import (
    RunAs,
    StackError,
    kill_all,
    kill_tree,
    matches,
    pids_in_dir,
    run,
    spawn_detached,
)
from ops.trust.postgres_roles import apply as apply_roles
from ops.trust.postgres_roles import ensure_passwords
from ops.trust.rights import PG_ADMIN, PG_ROLES, pg_database, pg_role
from pki.authority import ensure_authority
from pki.identities import POSTGRES
from shared.tls import ca_file

log = logging.getLogger("devstack")

SUPERUSER: Final = PG_ADMIN
OS_USER: Final = "postgres"
# Every database the stack's roles own: each service's, and the gateway's (ops/trust).
DATABASES: Final[dict[str, str]] = {party: pg_database(party) for party in PG_ROLES}

# Rewritten on every start so a port change in config.py takes effect without a re-initdb.
# No unix socket: the default socket dir may not exist on a fresh machine, a repo-relative one can
# exceed the 107-byte sun_path limit in deep checkouts, and everything talks TCP anyway.
_CONF = """\
# Written by devstack on every start; change devstack/postgres.py instead.
listen_addresses = '{host}'
port = {port}
unix_socket_directories = ''
max_connections = 300
shared_buffers = 128MB
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
{ssl}"""
_INCLUDE = "\ninclude_if_exists = 'devstack.conf'\n"


class Postgres(Component):
    name = "postgres"
    binary_hint = "postgres"
    # SIGTERM is "smart" shutdown, which waits for every client (service pools) to disconnect.
    stop_signal = signal.SIGINT
    stop_timeout = 30.0
    start_timeout = 60.0

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.profile.ports.postgres,)

    @property
    def data_dir(self) -> Path:
        return self.profile.dir / "postgres"

    @property
    def tls_dir(self) -> Path:
        """The profile's CA and certificates (the stack's tls_dir)."""
        return self.profile.dir / "tls"

    @property
    def passwords_dir(self) -> Path:
        """One password file per role, generated per stack; never committed, never logged."""
        return self.profile.dir / "secrets" / "postgres"

    def _dsn(self, role: str, db: str) -> str:
        password = quote(ensure_passwords(self.passwords_dir, (role,))[role], safe="")
        tls = f"sslmode=verify-full&sslrootcert={quote(str(ca_file(self.tls_dir)))}"
        if self.plaintext:  # bench-plain: its server has ssl off
            tls = "sslmode=disable"
        return f"postgresql://{role}:{password}@{HOST}:{self.port}/{quote(db)}?{tls}"

    def dsn(self, db: str) -> str:
        """The administrator's DSN to ``db``, for tests and tools (no service uses it)."""
        return self._dsn(SUPERUSER, db)

    def service_dsn(self, service: str, db: str | None = None) -> str:
        """The service's own DSN: its role, into its database (or ``db``, for tests)."""
        role = pg_role(service)
        return self._dsn(role, db or role)

    @property
    def dsn_base(self) -> str:
        # Without the password, which is read from the passwords dir by dsn().
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}"

    @property
    def plaintext(self) -> bool:
        """bench-plain's server: no TLS, trust on loopback (devstack/config.py)."""
        return not self.profile.infra_tls

    def install(self) -> None:
        ensure_postgres()

    def _bindir(self) -> Path:
        bindir = find_pg_bindir()
        if bindir is None:
            raise StackError(
                "PostgreSQL server binaries not found; run `python -m devstack install`"
            )
        return bindir

    @staticmethod
    def _run_as() -> RunAs | None:
        return RunAs.lookup(OS_USER) if os.geteuid() == 0 else None

    # --- on-disk state --------------------------------------------------------------------------

    def prepare(self) -> None:
        run_as = self._run_as()
        # Normally done by Stack.up already; `devstack start postgres` alone needs it too.
        ensure_authority(self.tls_dir, (POSTGRES,))
        if self.data_dir.exists() and not (self.data_dir / "PG_VERSION").is_file():
            log.warning(
                "postgres: %s is half-initialised (no PG_VERSION); re-creating", self.data_dir
            )
            shutil.rmtree(self.data_dir)
        if not self.data_dir.exists():
            self._initdb(run_as)
        if run_as is not None and self.data_dir.stat().st_uid != run_as.uid:
            _chown_tree(self.data_dir, run_as)
        self._clear_stale_lock()
        conf = self.data_dir / "devstack.conf"
        ssl = PLAINTEXT_CONF if self.plaintext else SSL_CONF
        conf.write_text(_CONF.format(host=HOST, port=self.port, ssl=ssl))
        if run_as is not None:
            os.chown(conf, run_as.uid, run_as.gid)
        sync_tls(self.tls_dir, self.data_dir, run_as)
        write_hba(self.data_dir, HOST, run_as, plaintext=self.plaintext)
        password = ensure_passwords(self.passwords_dir)[SUPERUSER]
        if not admin_password_is_set(self.data_dir, password):
            set_admin_password(self._bindir() / "postgres", self.data_dir, password, run_as)

    def _initdb(self, run_as: RunAs | None) -> None:
        # initdb into a scratch dir and rename, so an interrupted initdb never looks finished.
        scratch = self.data_dir.with_name("postgres.initdb")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700, parents=True)
        if run_as is not None:
            _check_traversable(scratch, run_as)
            os.chown(scratch, run_as.uid, run_as.gid)
        log.info("postgres: initdb %s", self.data_dir)
        password = ensure_passwords(self.passwords_dir)[SUPERUSER]
        # Beside the scratch dir (initdb wants that one empty), readable by the server's user.
        pwfile = self.data_dir.with_name("postgres.pwfile")
        pwfile.unlink(missing_ok=True)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        if run_as is not None:
            os.chown(pwfile, run_as.uid, run_as.gid)
        try:
            run(
                [
                    str(self._bindir() / "initdb"),
                    "-D", str(scratch),
                    "-U", SUPERUSER,
                    f"--pwfile={pwfile}",
                    "-E", "UTF8",
                    "--no-locale",
                    "--auth=scram-sha-256",
                    "--no-instructions",
                ],
                what="initdb",
                run_as=run_as,
                cwd=scratch,
                timeout=300,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        mark_admin_password(scratch, password, run_as)
        with (scratch / "postgresql.conf").open("a") as f:
            f.write(_INCLUDE)
        scratch.rename(self.data_dir)

    def _clear_stale_lock(self) -> None:
        """postmaster.pid of a crashed server blocks startup if its pid got reused; drop it.

        A postmaster that still runs on our data dir but that we lost track of is killed, since
        without a pid file nothing else would ever stop it.
        """
        lock = self.data_dir / "postmaster.pid"
        try:
            first = lock.read_text().split("\n", 1)[0].strip()
        except FileNotFoundError:
            return
        pid = int(first) if first.isdigit() else None
        if pid is not None and matches(pid, "postgres", str(self.data_dir)):
            log.warning("postgres: killing untracked postmaster pid %d on %s", pid, self.data_dir)
            kill_tree(pid)
        self.reap_leftovers(pid or 0)
        log.info("postgres: removing stale %s", lock)
        lock.unlink(missing_ok=True)

    def reap_leftovers(self, pid: int) -> None:
        # Backends orphaned by a SIGKILLed postmaster keep the old shared memory attached, and
        # a new postmaster refuses to start until they are gone. They exit on their own once
        # they notice, but a busy one can take a while.
        if pid:
            super().reap_leftovers(pid)
        kill_all(pids_in_dir(self.data_dir, _is_postgres_process), "postgres")

    # --- process --------------------------------------------------------------------------------

    def start(self) -> bool:
        pid = self.pid()
        if pid is not None:
            password = ensure_passwords(self.passwords_dir)[SUPERUSER]
            if not admin_password_is_set(self.data_dir, password):
                # Started by an older devstack (trust, no TLS): prepare() changes it over.
                log.info("postgres: restarting to switch on TLS and passwords")
                self.stop()
            else:
                self.refresh(pid)
        return super().start()

    def refresh(self, pid: int | None = None) -> bool:
        """Re-copies renewed TLS files and rewrites pg_hba.conf; reloads a running server.

        Returns whether the server was asked to reload.
        """
        run_as = self._run_as()
        changed = sync_tls(self.tls_dir, self.data_dir, run_as)
        changed = write_hba(self.data_dir, HOST, run_as, plaintext=self.plaintext) or changed
        pid = pid if pid is not None else self.pid()
        if changed and pid is not None:
            log.info("postgres: TLS files or pg_hba.conf changed; reloading")
            os.kill(pid, signal.SIGHUP)
        return changed and pid is not None

    def launch(self) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return spawn_detached(
            [str(self._bindir() / "postgres"), "-D", str(self.data_dir)],
            self.log_file,
            cwd=self.data_dir,
            env=env,
            run_as=self._run_as(),
        )

    def probe(self) -> bool:
        return run_coro(self._probe())

    async def _probe(self) -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(self.dsn("postgres"), timeout=3)
        except Exception:  # refused, "starting up", timeout...: all mean not ready yet
            return False
        try:
            return bool(await conn.fetchval("SELECT 1") == 1)
        finally:
            await conn.close()

    def provision(self) -> None:
        # Renewed certificates reach a server that was already running.
        self.refresh()
        passwords = ensure_passwords(self.passwords_dir)
        for change in run_coro(apply_roles(self.dsn("postgres"), passwords)):
            log.info("postgres: %s", change)


def _is_postgres_process(argv: list[str]) -> bool:
    # The postmaster keeps its real argv; every child retitles itself "postgres: <role>".
    return argv[0].startswith("postgres:") or Path(argv[0]).name == "postgres"


def _chown_tree(root: Path, run_as: RunAs) -> None:
    log.info("postgres: fixing ownership of %s", root)
    for dirpath, _dirs, files in os.walk(root):
        os.chown(dirpath, run_as.uid, run_as.gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), run_as.uid, run_as.gid, follow_symlinks=False)


def _check_traversable(path: Path, run_as: RunAs) -> None:
    """Fail early and clearly if the postgres user cannot reach the repo (e.g. a 0700 $HOME)."""
    groups = set(os.getgrouplist(run_as.user, run_as.gid))
    for parent in path.parents:
        st = parent.stat()
        if st.st_uid == run_as.uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            raise StackError(
                f"PostgreSQL runs as OS user {run_as.user!r}, which cannot enter {parent}; "
                f"allow it with `chmod o+x {parent}` or move the checkout"
            )

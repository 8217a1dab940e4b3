"""Pid files, /proc inspection, port ownership and detached spawning.

Everything here reads /proc directly instead of shelling out to ps/ss/lsof, because those are not
guaranteed to be installed on a fresh CI machine and parsing their output is more fragile.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

log = logging.getLogger("devstack")

_PROC = Path("/proc")
_TCP_LISTEN = "0A"
_LOG_ROTATE_BYTES = 20 * 1024 * 1024


class StackError(Exception):
    """Something the user has to act on; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account to drop to (PostgreSQL refuses to run as root)."""

    user: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, user: str) -> RunAs:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise StackError(
                f"OS user {user!r} does not exist (normally created by its package)"
            ) from None
        return cls(user, pw.pw_uid, pw.pw_gid)


# --- /proc inspection ---------------------------------------------------------------------------


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a pid, or None if it does not exist."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def is_alive(pid: int) -> bool:
    """True for a running process; zombies count as dead since they hold no ports or files.

    Deliberately no waitpid(): daemons are never our children (see spawn_detached), and reaping
    a caller's unrelated child that happens to have this pid would steal its exit status.
    """
    if pid <= 0:
        return False
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def matches(pid: int, *needles: str) -> bool:
    """Whether a live pid's command line contains all needles (guards against pid reuse)."""
    if not is_alive(pid):
        return False
    argv = cmdline(pid)
    if not argv:
        return False
    joined = " ".join(argv)
    return all(n in joined for n in needles)


def group_members(pgid: int) -> list[int]:
    """Live processes in a process group, e.g. PostgreSQL backends orphaned by a dead postmaster."""
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        st = _stat(pid)
        if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
            members.append(pid)
    return members


def pids_in_dir(directory: Path, argv_ok: Callable[[list[str]], bool]) -> list[int]:
    """Live processes whose working directory is `directory` and whose argv passes argv_ok.

    PostgreSQL backends setsid() themselves, so after a postmaster crash the only thing tying an
    orphaned backend to its cluster is its cwd, which is always the data directory.
    """
    target = str(directory.resolve())
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") != target:
                continue
        except OSError:
            continue
        pid = int(entry.name)
        argv = cmdline(pid)
        if argv and is_alive(pid) and argv_ok(argv):
            found.append(pid)
    return found


def kill_all(pids: Iterable[int], what: str) -> None:
    pids = list(pids)
    if not pids:
        return
    log.info("killing %d leftover %s process(es): %s", len(pids), what, pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(is_alive(p) for p in pids), 10.0, f"leftover {what} to exit")


# --- pid files ----------------------------------------------------------------------------------


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        first = text.split()[0] if text else ""
        return int(first) if first.isdigit() else None

    def write(self, pid: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# --- ports --------------------------------------------------------------------------------------


def _listen_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def listeners(port: int) -> tuple[bool, set[int]]:
    """(is anything listening on port, pids we could attribute the listening socket to)."""
    inodes = _listen_inodes(port)
    if not inodes:
        return False, set()
    targets = {f"socket:[{i}]" for i in inodes}
    pids: set[int] = set()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        pids.add(int(entry.name))
                        break
    return True, pids


def _port_free(port: int) -> bool:
    return not listeners(port)[0]


def http_get(host: str, port: int, path: str, timeout: float = 3.0) -> tuple[int, bytes] | None:
    """(status, body) of a GET, or None if the daemon did not answer: a readiness probe's
    one request, in plain HTTP (no client library in the helper threads that probe)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def clear_ports(
    ports: Iterable[int],
    marker: str,
    component: str,
    foreign_ok: bool = False,
    kill: Callable[[int], None] | None = None,
) -> list[int]:
    """Make sure ports are free: kill our own leftovers, refuse to touch anyone else's.

    Returns the pids killed. With foreign_ok, a foreign holder is left alone without complaint.
    """
    killed: list[int] = []
    for port in ports:
        busy, pids = listeners(port)
        if not busy:
            continue
        if not pids:
            if foreign_ok:
                continue
            raise StackError(
                f"port {port} (needed by {component}) is in use by a process devstack cannot see; "
                f"free it (e.g. `ss -ltnp 'sport = :{port}'`) or use another profile"
            )
        for pid in sorted(pids):
            argv = " ".join(cmdline(pid) or ["?"])
            if marker not in argv:
                if foreign_ok:
                    continue
                raise StackError(
                    f"port {port} (needed by {component}) is held by a foreign process: "
                    f"pid {pid}: {argv[:200]}\n"
                    f"Stop that program (e.g. `kill {pid}`) or use another --profile."
                )
            log.warning("%s: stopping stale pid %d left over on port %d", component, pid, port)
            (kill or kill_tree)(pid)
            killed.append(pid)
        if killed:
            wait_until(partial(_port_free, port), 10.0, f"port {port} to be released")
    return killed


# --- spawning and stopping ----------------------------------------------------------------------

# Runs in a throwaway interpreter: the daemon becomes a grandchild of the caller, so it is
# reparented to init, never becomes a zombie of a long-lived caller (pytest) and outlives us.
_TRAMPOLINE = """
import json, os, subprocess, sys
spec = json.loads(sys.stdin.read())
kw = {}
if spec["uid"] is not None:
    kw = {"user": spec["uid"], "group": spec["gid"], "extra_groups": []}
with open(spec["log"], "ab", buffering=0) as out:
    proc = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=out,
        stderr=subprocess.STDOUT, cwd=spec["cwd"], env=spec["env"], start_new_session=True,
        close_fds=True, **kw)
print(proc.pid, flush=True)
os._exit(0)
"""


def _rotate(log_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if log_path.stat().st_size > _LOG_ROTATE_BYTES:
            log_path.replace(log_path.with_name(log_path.name + ".1"))


def spawn_detached(
    argv: Sequence[str],
    log_path: Path,
    *,
    cwd: Path,
    env: Mapping[str, str],
    run_as: RunAs | None = None,
) -> int:
    """Start a daemon in its own session (pgid == pid) and return its pid."""
    _rotate(log_path)
    with log_path.open("ab") as out:
        out.write(f"\n=== {time.strftime('%F %T')} devstack start: {' '.join(argv)}\n".encode())
    spec = {
        "argv": list(argv),
        "log": str(log_path),
        "cwd": str(cwd),
        "env": dict(env),
        "uid": run_as.uid if run_as else None,
        "gid": run_as.gid if run_as else None,
    }
    res = subprocess.run(
        [sys.executable, "-c", _TRAMPOLINE],
        input=json.dumps(spec),  # not argv: a big environment would hit the 128 KiB arg limit
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if res.returncode != 0 or not res.stdout.strip().isdigit():
        raise StackError(f"could not start {argv[0]}: {res.stderr.strip() or res.stdout.strip()}")
    return int(res.stdout.strip())


def run(
    argv: Sequence[str],
    *,
    what: str,
    run_as: RunAs | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> str:
    """Run a one-shot helper (initdb, storage format, apt, mvn); raise with its output on error."""
    try:
        res = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=cwd,
            env=None if env is None else dict(env),
            timeout=timeout,
            check=False,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what}: timed out after {timeout:.0f}s") from exc
    if res.returncode != 0:
        output = (res.stdout + res.stderr).strip().splitlines()
        tail = "\n".join(output[-30:])
        raise StackError(f"{what} failed (exit {res.returncode}): {' '.join(argv)}\n{tail}")
    return res.stdout


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def kill_tree(pid: int) -> None:
    """SIGKILL a daemon and, if it leads its own process group (ours do), everything in it."""
    try:
        group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return
    _signal(pid, signal.SIGKILL, group)
    wait_until(lambda: not is_alive(pid), 10.0, f"pid {pid} to die")
    if group:
        reap_group(pid)


def reap_group(pgid: int) -> None:
    """Kill what is left of a dead daemon's process group (only if the group really was ours)."""
    if pgid <= 1 or is_alive(pgid):  # killpg(0) would mean our own group
        return  # the leader still runs: not a leftover group
    members = group_members(pgid)
    if not members:
        return
    with contextlib.suppress(PermissionError):
        _signal(pgid, signal.SIGKILL, True)
    wait_until(lambda: not group_members(pgid), 10.0, f"process group {pgid} to exit")


def terminate(pid: int, sig: int, timeout: float, component: str) -> None:
    """Graceful stop: sig, wait up to timeout, then SIGKILL the whole group."""
    _signal(pid, sig, False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            reap_group(pid)
            return
        time.sleep(0.1)
    log.warning(
        "%s: pid %d ignored signal %d for %.0fs, sending SIGKILL", component, pid, sig, timeout
    )
    kill_tree(pid)


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise StackError(f"timed out waiting for {what}")
        time.sleep(0.05)


def tail(path: Path, lines: int = 25) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise devstack invocations on one profile (e.g. two `make test` runs at once)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            log.info("waiting for another devstack command holding %s", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

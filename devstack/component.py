"""Lifecycle shared by the three daemons: pid file, stale-state cleanup, launch, readiness, stop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

from devstack.config import HOST, Profile
from devstack.process import (
    PidFile,
    StackError,
    accepts,
    clear_ports,
    is_alive,
    kill_tree,
    matches,
    reap_group,
    tail,
    terminate,
)

log = logging.getLogger("devstack")
T = TypeVar("T")


def run_coro(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, even from inside a running loop (pytest-asyncio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Component(ABC):
    name: ClassVar[str]
    # Substring of the daemon's argv: with the profile marker it tells our daemon from a pid reuse.
    binary_hint: ClassVar[str]
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 30.0
    start_timeout: ClassVar[float] = 90.0

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.pid_file = PidFile(profile.dir / f"{self.name}.pid")
        self.log_file = profile.logs_dir / f"{self.name}.log"

    @property
    @abstractmethod
    def ports(self) -> tuple[int, ...]:
        """All ports the daemon binds; the first is the one clients use."""

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    @abstractmethod
    def install(self) -> None:
        """Make the binaries available (idempotent, fast when already there)."""

    @abstractmethod
    def prepare(self) -> None:
        """Bring data dir and config to a launchable state, repairing a half-done init."""

    @abstractmethod
    def launch(self) -> int:
        """Spawn the daemon detached and return its pid."""

    @abstractmethod
    def probe(self) -> bool:
        """One quick end-to-end check that clients can really use the daemon."""

    def provision(self) -> None:  # noqa: B027 - optional hook, most daemons need nothing
        """Create what the services expect to exist (databases, topics); must be idempotent."""

    # --- state ----------------------------------------------------------------------------------

    def pid(self, cleanup: bool = False) -> int | None:
        """Pid of our running daemon, or None.

        Only callers holding the profile lock may pass cleanup=True (drop a stale pid file, kill
        what the dead daemon left): a lock-free reader (status, is_up) could otherwise race a
        concurrent start and delete the pid file or processes it has just created.
        """
        pid = self.pid_file.read()
        if pid is not None and matches(pid, self.binary_hint, self.profile.marker):
            return pid
        if not cleanup:
            return None
        if pid is None:
            self.pid_file.remove()
            return None
        log.info("%s: pid %d from the pid file is gone or not ours; cleaning up", self.name, pid)
        self.reap_leftovers(pid)
        self.pid_file.remove()
        return None

    def reap_leftovers(self, pid: int) -> None:
        """Kill what a dead daemon left behind: children still in its process group."""
        reap_group(pid)

    def is_up(self) -> bool:
        return self.pid() is not None and accepts(HOST, self.port)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> bool:
        """Start unless already up; returns whether it had to start anything."""
        self.profile.logs_dir.mkdir(parents=True, exist_ok=True)
        pid = self.pid(cleanup=True)
        if pid is not None:
            try:
                # Possibly still booting (an interrupted `up`): give it the normal startup window.
                self._wait_ready(pid, quiet=True)
                self.provision()
                return False
            except StackError as exc:
                log.warning(
                    "%s: running (pid %d) but not healthy, restarting: %s", self.name, pid, exc
                )
                self.stop()
        self.install()
        clear_ports(self.ports, self.profile.marker, self.name)
        self.prepare()
        started = time.monotonic()
        pid = self.launch()
        self.pid_file.write(pid)
        self._wait_ready(pid)
        log.info(
            "%s: up on %s, pid %d (%.1fs)",
            self.name,
            self.endpoint,
            pid,
            time.monotonic() - started,
        )
        self.provision()
        return True

    def _wait_ready(self, pid: int, quiet: bool = False) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not is_alive(pid):
                raise StackError(
                    f"{self.name} (pid {pid}) exited during startup\n{self.diagnostics()}"
                )
            if accepts(HOST, self.port) and self.probe():
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} not ready after {self.start_timeout:.0f}s\n{self.diagnostics()}"
                )
            time.sleep(0.1 if quiet else 0.25)

    def diagnostics(self) -> str:
        """What to show when startup fails: the end of the daemon's log(s)."""
        return f"--- end of {self.log_file}:\n{tail(self.log_file)}"

    def stop(self) -> bool:
        """Graceful stop; returns whether anything was running."""
        pid = self.pid(cleanup=True)
        if pid is not None:
            log.info("%s: stopping pid %d", self.name, pid)
            self._terminate(pid)
            self.reap_leftovers(pid)
            self.pid_file.remove()
        # Ours but untracked (pid file deleted): nothing else would ever stop it.
        strays = clear_ports(
            self.ports, self.profile.marker, self.name, foreign_ok=True, kill=self._terminate
        )
        for stray in strays:
            self.reap_leftovers(stray)
        return pid is not None or bool(strays)

    def _terminate(self, pid: int) -> None:
        terminate(pid, self.stop_signal, self.stop_timeout, self.name)

    def kill(self) -> bool:
        """SIGKILL, as in a crash; the pid file stays behind on purpose, as after a real crash."""
        pid = self.pid(cleanup=True)
        if pid is None:
            return False
        log.info("%s: killing pid %d", self.name, pid)
        kill_tree(pid)
        # Everything dies at once, so tests see a clean outage rather than stragglers.
        self.reap_leftovers(pid)
        return True

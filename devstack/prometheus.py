"""Prometheus: scrapes every service instance registered in etcd, per profile.

Two processes make the component: Prometheus itself, and the targets bridge
(devstack/prometheus_targets.py) that turns the registry in etcd into Prometheus' file_sd
file. The pid file, probe and port are Prometheus'; the bridge has a pid file and log of its
own and lives and dies with it, since a Prometheus whose targets no longer follow etcd would
quietly scrape a stale list.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

from devstack.component import Component
from devstack.config import HOST, REPO_ROOT, Profile
from devstack.install import ensure_prometheus, find_prometheus
from devstack.process import (
    PidFile,
    StackError,
    http_get,
    kill_tree,
    matches,
    spawn_detached,
    tail,
    terminate,
)

log = logging.getLogger("devstack")

# One rules file for both Prometheus servers. It lives with the cluster's, because kustomize
# reads no file outside the kustomization's folder; the local server reads it from there.
RULES_FILE = REPO_ROOT / "deploy" / "k8s" / "observability" / "rules.yml"
_BRIDGE_MODULE = "devstack.prometheus_targets"

# JSON strings are YAML strings too, so paths are written with json.dumps: no quoting surprises.
_CONFIG = """\
# Written by devstack on every start; change devstack/prometheus.py instead.
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
rule_files:
  - {rules}
scrape_configs:
  - job_name: shop
    # Targets follow the registry in etcd, written by the targets bridge.
    file_sd_configs:
      - files:
          - {targets}
        refresh_interval: 5s
"""


class Prometheus(Component):
    name = "prometheus"
    # The binary's name alone would also match the bridge's command line (devstack.prometheus_...).
    binary_hint = "prometheus --config.file="
    stop_timeout = 30.0
    start_timeout = 60.0

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.bridge_pid_file = PidFile(self.profile.dir / "prometheus-targets.pid")
        self.bridge_log_file = self.profile.logs_dir / "prometheus-targets.log"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.profile.ports.prometheus,)

    @property
    def home(self) -> Path:
        return self.profile.dir / "prometheus"

    @property
    def config_file(self) -> Path:
        return self.home / "prometheus.yml"

    @property
    def targets_file(self) -> Path:
        return self.home / "targets.json"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def url(self) -> str:
        """The web UI and the HTTP API (/api/v1/...)."""
        return f"http://{HOST}:{self.port}/"

    @property
    def _etcd_endpoint(self) -> str:
        return f"{HOST}:{self.profile.ports.etcd_client}"

    def install(self) -> None:
        ensure_prometheus()

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            _CONFIG.format(
                rules=json.dumps(str(RULES_FILE)), targets=json.dumps(str(self.targets_file))
            )
        )
        # Prometheus logs an error for a missing file_sd file until the bridge's first write;
        # an existing one is kept: the bridge replaces it within a poll if it is stale.
        if not self.targets_file.exists():
            self.targets_file.write_text("[]\n")

    def diagnostics(self) -> str:
        bridge = f"--- end of {self.bridge_log_file}:\n{tail(self.bridge_log_file)}"
        return f"{super().diagnostics()}\n{bridge}"

    # --- process --------------------------------------------------------------------------------

    def launch(self) -> int:
        exe = find_prometheus()
        if exe is None:
            raise StackError("prometheus not found; run `python -m devstack install`")
        # A bridge left by an earlier Prometheus (crashed, or lost track of) goes with it.
        self._stop_bridge()
        self._launch_bridge()
        argv = [
            str(exe),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={HOST}:{self.port}",
            "--web.enable-lifecycle",
        ]
        return spawn_detached(argv, self.log_file, cwd=self.home, env=os.environ)

    def _launch_bridge(self) -> None:
        argv = [
            sys.executable,
            "-m",
            _BRIDGE_MODULE,
            "--etcd",
            self._etcd_endpoint,
            "--tls-dir",
            str(self.profile.dir / "tls"),  # Stack.tls_dir
            "--out",
            str(self.targets_file),
        ]
        # `-m devstack...` needs the repo on its path.
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path}
        pid = spawn_detached(argv, self.bridge_log_file, cwd=self.home, env=env)
        self.bridge_pid_file.write(pid)

    def bridge_pid(self) -> int | None:
        """Pid of our running targets bridge, or None (its etcd is part of what makes it ours)."""
        pid = self.bridge_pid_file.read()
        needles = (_BRIDGE_MODULE, f"--etcd {self._etcd_endpoint}", self.profile.marker)
        if pid is not None and matches(pid, *needles):
            return pid
        return None

    def _stop_bridge(self) -> bool:
        pid = self.bridge_pid()
        if pid is not None:
            log.info("prometheus: stopping targets bridge pid %d", pid)
            terminate(pid, signal.SIGTERM, 5.0, "prometheus-targets")
        self.bridge_pid_file.remove()
        return pid is not None

    def probe(self) -> bool:
        """/-/ready answers 200 once the TSDB is open and rules and targets are loaded.

        A dead bridge fails the start at once (with its log) rather than after the timeout;
        for a running Prometheus it makes start() restart both.
        """
        if self.bridge_pid() is None:
            raise StackError(
                f"the targets bridge is not running; end of {self.bridge_log_file}:\n"
                f"{tail(self.bridge_log_file, lines=5)}"
            )
        answer = http_get(HOST, self.port, "/-/ready")
        return answer is not None and answer[0] == 200

    # --- the bridge follows Prometheus through every lifecycle path -------------------------------

    def is_up(self) -> bool:
        return super().is_up() and self.bridge_pid() is not None

    def reap_leftovers(self, pid: int) -> None:
        # Called whenever a Prometheus is gone (stopped, killed, found dead, a stray on the port).
        super().reap_leftovers(pid)
        self._stop_bridge()

    def stop(self) -> bool:
        stopped = super().stop()
        # Also a bridge whose Prometheus was never tracked (its pid file deleted).
        return self._stop_bridge() or stopped

    def kill(self) -> bool:
        # A crash takes both down at once; the base class then finds the bridge already gone.
        bridge = self.bridge_pid()
        if bridge is not None:
            log.info("prometheus: killing targets bridge pid %d", bridge)
            kill_tree(bridge)
        return super().kill() or bridge is not None

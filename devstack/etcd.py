"""etcd: a single-member cluster per profile, used by the services for discovery and config."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from devstack.component import Component
from devstack.config import HOST
from devstack.install import ensure_etcd, find_etcd
from devstack.process import StackError, http_get, spawn_detached

log = logging.getLogger("devstack")


class Etcd(Component):
    name = "etcd"
    binary_hint = "etcd"
    stop_timeout = 15.0
    start_timeout = 30.0

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.profile.ports.etcd_client, self.profile.ports.etcd_peer)

    @property
    def data_dir(self) -> Path:
        return self.profile.dir / "etcd"

    @property
    def member_name(self) -> str:
        return f"shop-{self.profile.name}"

    def install(self) -> None:
        ensure_etcd()

    def prepare(self) -> None:
        member = self.data_dir / "member"
        if member.exists() and not (member / "wal").is_dir():
            # etcd decides "new member vs restart" from member/wal; without it the dir is junk.
            log.warning("etcd: %s is half-initialised (no member/wal); re-creating", self.data_dir)
            shutil.rmtree(self.data_dir)
        # etcd 3.4 warns (3.5 refuses) unless the data dir is 0700.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)

    def launch(self) -> int:
        exe = find_etcd()
        if exe is None:
            raise StackError("etcd not found; run `python -m devstack install`")
        client = f"http://{HOST}:{self.profile.ports.etcd_client}"
        peer = f"http://{HOST}:{self.profile.ports.etcd_peer}"
        argv = [
            str(exe),
            f"--name={self.member_name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.member_name}={peer}",
            f"--initial-cluster-token={self.member_name}",
            "--initial-cluster-state=new",
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1h",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        # ETCD_* variables in the caller's environment would silently override our flags.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        return spawn_detached(argv, self.log_file, cwd=self.profile.dir, env=env)

    def probe(self) -> bool:
        """etcd's own /health: leader elected, no alarms, a quorum read succeeds.

        Plain HTTP rather than aetcd: this runs in helper threads of processes (pytest) that may
        be using grpc.aio on their own loop, and the probe should not touch that machinery.
        """
        answer = http_get(HOST, self.port, "/health")
        try:
            return (
                answer is not None
                and answer[0] == 200
                and (json.loads(answer[1]).get("health") == "true")
            )
        except ValueError:
            return False

"""etcd: a single-member cluster per profile, used by the services for discovery and config.

Clients and peers speak TLS only and must present a certificate of the profile's CA;
with authentication on (provision), the certificate's common name is the etcd user
(docs/decisions/trust-below-grpc.md). A plaintext listener serves /health and /metrics
alone, on loopback, for the probe.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from aetcd import rpc

from devstack.component import Component, run_coro
from devstack.config import HOST
from devstack.install import ensure_etcd, find_etcd
from devstack.process import StackError, http_get, spawn_detached
from ops.trust.etcd_auth import apply_at
from pki.identities import ETCD_ROOT
from shared.registry.etcd import etcd_client
from shared.tls import ETCD, ClientTLS, ca_file, cert_file, key_file

log = logging.getLogger("devstack")


class Etcd(Component):
    name = "etcd"
    binary_hint = "etcd"
    stop_timeout = 15.0
    start_timeout = 30.0

    @property
    def ports(self) -> tuple[int, ...]:
        ports = self.profile.ports
        return (ports.etcd_client, ports.etcd_peer, ports.etcd_metrics)

    @property
    def tls_dir(self) -> Path:
        """The profile's CA and certificates (Stack.tls_dir; ensure_authority fills it)."""
        return self.profile.dir / "tls"

    @property
    def data_dir(self) -> Path:
        return self.profile.dir / "etcd"

    @property
    def member_name(self) -> str:
        return f"shop-{self.profile.name}"

    @property
    def scheme(self) -> str:
        """https, except on the plaintext baseline of `make bench-trust` (bench-plain)."""
        return "https" if self.profile.infra_tls else "http"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.profile.ports.etcd_peer}"

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
        client = f"{self.scheme}://{HOST}:{self.profile.ports.etcd_client}"
        peer = self.peer_url
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
            *(self._tls_flags() if self.profile.infra_tls else []),
            f"--listen-metrics-urls=http://{HOST}:{self.profile.ports.etcd_metrics}",
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1h",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        # ETCD_* variables in the caller's environment would silently override our flags.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        return spawn_detached(argv, self.log_file, cwd=self.profile.dir, env=env)

    def _tls_flags(self) -> list[str]:
        cert, key, ca = (
            cert_file(self.tls_dir, ETCD),
            key_file(self.tls_dir, ETCD),
            ca_file(self.tls_dir),
        )
        return [
            # Clients: TLS with a certificate of our CA, its common name the etcd user.
            f"--cert-file={cert}",
            f"--key-file={key}",
            f"--trusted-ca-file={ca}",
            "--client-cert-auth",
            # Peers the same way (one member here; Kubernetes runs three, alike).
            f"--peer-cert-file={cert}",
            f"--peer-key-file={key}",
            f"--peer-trusted-ca-file={ca}",
            "--peer-client-cert-auth",
        ]

    def provision(self) -> None:
        """Users and roles of the rights table, and authentication on (idempotent)."""
        if not self.profile.infra_tls:  # bench-plain: auth stays off, as etcd starts
            return
        run_coro(self._advertise_tls_peer_url())
        report = run_coro(apply_at(self.endpoint, self.tls_dir))
        if report.changes:
            log.info("etcd: %d auth change(s) applied", len(report.changes))

    async def _advertise_tls_peer_url(self) -> None:
        """A data dir from before peers spoke TLS keeps the member's http:// peer URL in
        its membership (etcd ignores --initial-advertise-peer-urls on a restart)."""
        client = etcd_client(self.endpoint, tls=ClientTLS(self.tls_dir, ETCD_ROOT))
        try:
            await client.connect()
            stub = rpc.ClusterStub(client.channel)
            for member in (await stub.MemberList(rpc.MemberListRequest(), timeout=5)).members:
                if member.name == self.member_name and list(member.peerURLs) != [self.peer_url]:
                    request = rpc.MemberUpdateRequest(ID=member.ID, peerURLs=[self.peer_url])
                    await stub.MemberUpdate(request, timeout=5)
                    log.info("etcd: member %s now advertises %s", member.name, self.peer_url)
        finally:
            await client.close()

    def probe(self) -> bool:
        """etcd's own /health: leader elected, no alarms, a quorum read succeeds.

        Plain HTTP on the metrics listener rather than aetcd: this runs in helper threads of
        processes (pytest) that may be using grpc.aio on their own loop, and the probe should
        not touch that machinery.
        """
        answer = http_get(HOST, self.profile.ports.etcd_metrics, "/health")
        try:
            return (
                answer is not None
                and answer[0] == 200
                and (json.loads(answer[1]).get("health") == "true")
            )
        except ValueError:
            return False

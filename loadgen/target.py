"""The system under load: where its services are found and which databases the audit reads.

``env_target`` is the one the environment names: `make load-k8s` runs the load generator as a
Job in the cluster with etcd, the operator certificate and the databases in its environment.
`make load` targets the `make run` system instead (dev_target.py, on devstack).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pki.identities import SERVICES
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS


@dataclass
class Target:
    """Where the load goes and where the audit reads."""

    name: str
    clients: ServiceClients
    directory: ServiceDirectory
    audit_dsns: Mapping[str, str]
    # Where the services' own figures are (loadgen/services_saw.py); "" when unknown.
    prometheus_url: str = ""

    def instances(self) -> dict[str, list[str]]:
        return {s: [i.address for i in self.directory.instances(s)] for s in SERVICES}


@contextlib.asynccontextmanager
async def env_target(environ: Mapping[str, str] = os.environ) -> AsyncIterator[Target]:
    """The system the environment names: SHOP_ETCD_ENDPOINT, SHOP_TLS_DIR (the operator's
    certificate) and SHOP_<SVC>_PG_DSN for the audited databases (inventory, order, payment).
    """
    names = ["SHOP_ETCD_ENDPOINT", "SHOP_TLS_DIR"]
    dsn_names = {s: f"SHOP_{s.upper()}_PG_DSN" for s in ("inventory", "order", "payment")}
    if missing := [n for n in [*names, *dsn_names.values()] if not environ.get(n)]:
        raise RuntimeError(f"the environment does not name the system: {', '.join(missing)}")
    operator = ClientTLS.operator(Path(environ["SHOP_TLS_DIR"]))
    etcd = etcd_client(environ["SHOP_ETCD_ENDPOINT"], tls=operator)
    directory = ServiceDirectory(etcd)
    await directory.start()
    clients = ServiceClients(directory, operator)
    try:
        yield Target(
            "env",
            clients,
            directory,
            {s: environ[n] for s, n in dsn_names.items()},
            environ.get("SHOP_PROMETHEUS_URL", ""),
        )
    finally:
        await clients.close()
        await directory.stop()
        await etcd.close()

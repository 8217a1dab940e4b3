"""The system under load: where its services are found and which databases the audit reads.

``env_target`` is the one the environment names: `make load-k8s` runs the load generator as a
Job in the cluster with etcd, the operator certificate and the databases in its environment.
`make load` targets the `make run` system instead (dev_target.py, on devstack).

A REST scenario also needs the gateway (its URL, or the first one registered in etcd) and
the secret of the load generator's OAuth2 client (``loadgen``), read from its file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loadgen.rest import ClientToken
from ops.oauth_clients import LOADGEN
from pki.identities import SERVICES
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.rpc.client import ServiceClients
from shared.tls import GATEWAY, ClientTLS


@dataclass
class Target:
    """Where the load goes and where the audit reads."""

    name: str
    clients: ServiceClients
    directory: ServiceDirectory
    audit_dsns: Mapping[str, str]
    # Where the services' own figures are (loadgen/services_saw.py); "" when unknown.
    prometheus_url: str = ""
    # The gateway's origin; "" to take the first gateway registered in etcd.
    gateway_url: str = ""
    # The load generator's OAuth2 client secret (ops/oauth_clients.py); None: no REST.
    client_secret_file: Path | None = None
    _token: ClientToken | None = field(default=None, init=False, repr=False)

    def instances(self) -> dict[str, list[str]]:
        return {s: [i.address for i in self.directory.instances(s)] for s in SERVICES}

    def gateway(self) -> str:
        """The gateway's origin: the one given, or a registered instance's HTTP address."""
        if self.gateway_url:
            return self.gateway_url.rstrip("/")
        for instance in sorted(self.directory.instances(GATEWAY), key=lambda i: i.instance_id):
            if instance.http:
                return f"http://{instance.http}"
        raise RuntimeError("no gateway is registered: start the system with its gateway")

    def client_token(self) -> ClientToken:
        """The load generator's client credentials, kept for the whole run."""
        if self._token is None:
            if self.client_secret_file is None:
                raise RuntimeError("this target names no secret for the loadgen OAuth2 client")
            secret = self.client_secret_file.read_text().strip()
            self._token = ClientToken(self.gateway(), LOADGEN, secret)
        return self._token


@contextlib.asynccontextmanager
async def env_target(environ: Mapping[str, str] = os.environ) -> AsyncIterator[Target]:
    """The system the environment names: SHOP_ETCD_ENDPOINT, SHOP_TLS_DIR (the operator's
    certificate) and SHOP_<SVC>_PG_DSN for the audited databases (inventory, order, payment);
    for REST, SHOP_LOADGEN_CLIENT_SECRET_FILE (and SHOP_GATEWAY_URL, else etcd's gateway).
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
            environ.get("SHOP_GATEWAY_URL", ""),
            Path(secret) if (secret := environ.get("SHOP_LOADGEN_CLIENT_SECRET_FILE")) else None,
        )
    finally:
        await clients.close()
        await directory.stop()
        await etcd.close()

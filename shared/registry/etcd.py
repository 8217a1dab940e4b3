"""Opening an aetcd client from a host:port endpoint, as one identity of the CA.

etcd serves TLS only and takes the client certificate's common name as its user
(docs/decisions/trust-below-grpc.md), so every client names who it is: a service its
own name, tools and tests ``operator``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import aetcd
from aetcd import rpc, watcher

from shared.settings import ServiceSettings
from shared.tls import ETCD, ClientTLS

log = logging.getLogger(__name__)

# The name etcd's certificate must carry, whatever address the client dials (its
# certificate names the Kubernetes Services and the loopback too).
SERVER_NAME: Final = ETCD

PREFIX = "/services/"


def service_prefix(service: str) -> str:
    return f"{PREFIX}{service}/"


def instance_key(service: str, instance_id: str) -> str:
    return f"{PREFIX}{service}/{instance_id}"


class EtcdClient(aetcd.Client):
    """aetcd's client, whose close cannot hold a shutdown.

    aetcd's close first ends the shared watch stream, under the watcher's locks and
    behind its bounded request queue, with no time limit; once (a test's teardown in
    CI) that did not return for 300 s. A stopping process waits ``close_seconds`` for
    it, then closes the channel itself: nothing it would still send matters then.
    """

    def __init__(
        self,
        *args: object,
        tls: ClientTLS | None,
        close_seconds: float = 3.0,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.tls = tls
        self.close_seconds = close_seconds

    async def connect(self) -> None:
        """aetcd's connect, over TLS with this client's certificate.

        aetcd opens insecure channels only. The credentials are the identity's files as
        they are now: a channel keeps them for its life, so a renewed certificate
        reaches this client when it next connects (after ``close``).
        """
        # Plaintext: the tests that prove etcd refuses it, and bench-plain (`make bench-trust`).
        if self.tls is None:
            await super().connect()
            return
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]  # another task opens the channel
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            options = [*self._options.items(), ("grpc.ssl_target_name_override", SERVER_NAME)]
            self.channel = rpc.secure_channel(
                f"{self._host}:{self._port}", self.tls.credentials(), options=options
            )
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self.auth_stub = rpc.AuthStub(self.channel)
            self._watcher = watcher.Watcher(
                rpc.WatchStub(self.channel), timeout=self._timeout, metadata=None
            )
            self._connected.set()
        finally:
            self._is_connecting = False

    async def close(self) -> None:
        try:
            async with asyncio.timeout(self.close_seconds):
                await super().close()
        except TimeoutError:
            log.warning(
                "etcd client did not close its watch stream in %.1f s; its channel is dropped",
                self.close_seconds,
            )
            channel = self.channel
            self._init_channel_attrs()
            self._connected.clear()
            if channel is not None:
                await channel.close()


def etcd_client(endpoint: str, *, tls: ClientTLS | None, timeout: float = 5.0) -> EtcdClient:
    """A client of etcd at host:port acting as ``tls``'s identity (None: plaintext,
    which etcd refuses; only tests that prove so and bench-plain's clients pass it)."""
    host, _, port = endpoint.rpartition(":")
    # aetcd's timeout is per RPC; without one a call to a dead etcd hangs forever.
    return EtcdClient(host=host or "127.0.0.1", port=int(port), timeout=timeout, tls=tls)


def service_etcd_client(settings: ServiceSettings) -> EtcdClient:
    """The service's own client of etcd: as its certificate's identity, or in plaintext
    when ``settings.infra_tls`` is off (bench-plain only; a real etcd refuses it)."""
    tls = ClientTLS(settings.tls_dir, settings.service_name) if settings.infra_tls else None
    return etcd_client(settings.etcd_endpoint, tls=tls)

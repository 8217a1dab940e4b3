"""Opening an aetcd client from a host:port endpoint."""

from __future__ import annotations

import asyncio
import logging

import aetcd

log = logging.getLogger(__name__)

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

    def __init__(self, *args: object, close_seconds: float = 3.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.close_seconds = close_seconds

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


def etcd_client(endpoint: str, timeout: float = 5.0) -> EtcdClient:
    host, _, port = endpoint.rpartition(":")
    # aetcd's timeout is per RPC; without one a call to a dead etcd hangs forever.
    return EtcdClient(host=host or "127.0.0.1", port=int(port), timeout=timeout)

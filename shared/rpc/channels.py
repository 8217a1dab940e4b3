"""Channels to service instances: one per instance, all mutual TLS, replaced when due.

Every channel is mutual TLS: the caller presents its own certificate (``ClientTLS``:
a service's own inside a service, the operator's in tools and tests) and checks
that the server's certificate names the service it meant to call. When the
caller's files are renewed, its channels are replaced, so new connections use
the new certificate while calls on the old channels finish. A channel to an
instance that leaves the directory (its lease expired) is closed, which cancels
the calls still in flight on it (``ServiceClients.call`` tries them elsewhere).
"""

from __future__ import annotations

import asyncio

import grpc

from shared.registry.discovery import Instance, ServiceDirectory
from shared.tls import ClientTLS

# How long calls on a channel replaced by a certificate renewal may still run.
RENEWAL_GRACE_SECONDS = 10.0


class ChannelPool:
    """The channels of one caller, keyed by (service, address)."""

    def __init__(self, directory: ServiceDirectory, tls: ClientTLS) -> None:
        self._tls = tls
        self._credentials = tls.credentials()
        # Keyed by service too: the name checked on the server's certificate is the service's.
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._draining: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        directory.cache.listeners.append(self._on_instance_change)

    @property
    def tls(self) -> ClientTLS:
        return self._tls

    def _on_instance_change(self, instance: Instance, alive: bool) -> None:
        key = (instance.service, instance.address)
        if not alive and (channel := self._channels.pop(key, None)) is not None:
            # Let in-flight calls on it finish or fail on their own.
            self._close_later(channel, grace=1.0)

    def _close_later(self, channel: grpc.aio.Channel, grace: float) -> None:
        task = asyncio.get_running_loop().create_task(channel.close(grace=grace))
        self._draining[task] = channel
        task.add_done_callback(lambda done: self._draining.pop(done, None))

    def channel(self, instance: Instance) -> grpc.aio.Channel:
        credentials = self._tls.credentials()
        if credentials is not self._credentials:  # our certificate was renewed
            self._credentials = credentials
            for old in self._channels.values():
                self._close_later(old, grace=RENEWAL_GRACE_SECONDS)
            self._channels.clear()
        key = (instance.service, instance.address)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._tls.channel(instance.address, instance.service)
            self._channels[key] = channel
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
        # Channels still draining after a renewal or an instance's death: now.
        for task, channel in list(self._draining.items()):
            task.cancel()
            await channel.close(grace=None)
        self._draining.clear()

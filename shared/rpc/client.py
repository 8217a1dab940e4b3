"""Calling other services through discovery: no peer address is configured.

``ServiceClients.call`` picks an instance round-robin from the directory and,
when that instance turns out to be dead (UNAVAILABLE) before etcd has expired
its key, ejects it for a few seconds and tries the next one. Only UNAVAILABLE
is retried here: the request never reached a live server, so a retry cannot
apply it twice.

Every channel is mutual TLS: the caller presents its own certificate (``ClientTLS``:
a service's own inside a service, the operator's in tools and tests) and checks
that the server's certificate names the service it meant to call. When the
caller's files are renewed, its channels are replaced, so new connections use
the new certificate while calls on the old channels finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from shared.registry.discovery import Instance, ServiceDirectory
from shared.tls import ClientTLS

log = logging.getLogger(__name__)

StubT = TypeVar("StubT")
ResultT = TypeVar("ResultT")

EJECT_SECONDS = 10.0
# How long calls on a channel replaced by a certificate renewal may still run.
RENEWAL_GRACE_SECONDS = 10.0


def forwarded_credentials(
    context: grpc.aio.ServicerContext,
) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's authorization metadata, to call a peer on the caller's behalf.

    The peer then checks the caller's own token: a service never calls with
    more authority than the user who asked it to.
    """
    return tuple(
        (key, value) for key, value in context.invocation_metadata() or () if key == "authorization"
    )


class ServiceClients:
    def __init__(self, directory: ServiceDirectory, tls: ClientTLS, *, attempts: int = 3) -> None:
        self._directory = directory
        self._tls = tls
        self._credentials = tls.credentials()
        # Keyed by service too: the name checked on the server's certificate is the service's.
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._draining: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        self._attempts = attempts
        directory.cache.listeners.append(self._on_instance_change)

    @property
    def directory(self) -> ServiceDirectory:
        return self._directory

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

    async def call(
        self,
        service: str,
        stub_type: Callable[[grpc.aio.Channel], StubT],
        invoke: Callable[[StubT], Awaitable[ResultT]],
    ) -> ResultT:
        last_error: grpc.aio.AioRpcError | None = None
        for _ in range(self._attempts):
            instance = self._directory.pick(service)
            try:
                return await invoke(stub_type(self.channel(instance)))
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                log.warning(
                    "%s at %s unavailable; trying another instance", service, instance.address
                )
                self._directory.cache.eject(instance, EJECT_SECONDS)
                last_error = error
        assert last_error is not None
        raise last_error

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
        # Channels still draining after a renewal or an instance's death: now.
        for task, channel in list(self._draining.items()):
            task.cancel()
            await channel.close(grace=None)
        self._draining.clear()

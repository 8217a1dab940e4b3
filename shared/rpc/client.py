"""Calling other services through discovery: no peer address is configured.

``ServiceClients.call`` picks an instance round-robin from the directory and,
when that instance turns out to be dead (UNAVAILABLE) before etcd has expired
its key, ejects it for a few seconds and tries the next one. Only UNAVAILABLE
is retried here: the request never reached a live server, so a retry cannot
apply it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from shared.registry.discovery import Instance, ServiceDirectory

log = logging.getLogger(__name__)

StubT = TypeVar("StubT")
ResultT = TypeVar("ResultT")

EJECT_SECONDS = 10.0


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
    def __init__(self, directory: ServiceDirectory, *, attempts: int = 3) -> None:
        self._directory = directory
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._attempts = attempts
        directory.cache.listeners.append(self._on_instance_change)

    def _on_instance_change(self, instance: Instance, alive: bool) -> None:
        if not alive and (channel := self._channels.pop(instance.address, None)) is not None:
            # Closing is async; let in-flight calls on it finish or fail on their own.
            asyncio.get_running_loop().create_task(channel.close(grace=1.0))

    def channel(self, instance: Instance) -> grpc.aio.Channel:
        channel = self._channels.get(instance.address)
        if channel is None:
            channel = grpc.aio.insecure_channel(instance.address)
            self._channels[instance.address] = channel
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

"""A local cache of live instances, fed by one etcd watch.

List the prefix once, then watch from the next revision; every PUT adds or
updates an instance, every DELETE (lease expiry or revoke) drops it at once.
When the watch breaks (etcd restart, compaction), the cache is kept as it is
(stale beats empty while etcd is away) and rebuilt from a fresh listing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aetcd
from aetcd import rtypes

from shared.errors import Unavailable
from shared.registry.etcd import PREFIX
from shared.registry.watch import KeyRangeFollower, prefix_range
from shop.common.v1.error_reason_pb2 import ErrorReason

log = logging.getLogger(__name__)


class NoInstanceAvailable(Unavailable):
    """No live instance of a service is registered."""

    reason = ErrorReason.ERROR_REASON_NO_INSTANCE


@dataclass(frozen=True, slots=True)
class Instance:
    service: str
    instance_id: str
    address: str
    version: str
    lease_id: int
    # Where its Prometheus metrics are served ("" if not).
    metrics: str = ""
    # Where it serves HTTPS beside gRPC ("" if not): the user service's OAuth2 server.
    http: str = ""


def parse_instance(key: bytes, value: bytes, lease_id: int) -> Instance | None:
    """None for keys that are not well-formed instance records."""
    parts = key.decode().removeprefix(PREFIX).split("/")
    if len(parts) != 2:
        return None
    try:
        record = json.loads(value)
        return Instance(
            parts[0],
            parts[1],
            str(record["address"]),
            str(record.get("version", "")),
            lease_id,
            str(record.get("metrics", "")),
            str(record.get("http", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None


class InstanceCache:
    """Pure bookkeeping of instances per service, with round-robin picking."""

    def __init__(self) -> None:
        self._by_service: dict[str, dict[str, Instance]] = {}
        self._counters: dict[str, itertools.count[int]] = {}
        # Instances a caller found dead before etcd noticed, skipped until the deadline.
        self._ejected: dict[str, float] = {}
        self.listeners: list[Callable[[Instance, bool], None]] = []

    def replace_all(self, instances: list[Instance]) -> None:
        old = {i.address: i for s in self._by_service.values() for i in s.values()}
        self._by_service = {}
        for instance in instances:
            self._by_service.setdefault(instance.service, {})[instance.instance_id] = instance
        new_addresses = {i.address for i in instances}
        for address, instance in old.items():
            if address not in new_addresses:
                self._notify(instance, False)

    def upsert(self, instance: Instance) -> None:
        self._by_service.setdefault(instance.service, {})[instance.instance_id] = instance
        self._notify(instance, True)

    def remove(self, service: str, instance_id: str) -> None:
        instance = self._by_service.get(service, {}).pop(instance_id, None)
        if instance is not None:
            self._notify(instance, False)

    def instances(self, service: str) -> list[Instance]:
        return sorted(self._by_service.get(service, {}).values(), key=lambda i: i.instance_id)

    def eject(self, instance: Instance, seconds: float) -> None:
        self._ejected[instance.address] = time.monotonic() + seconds

    def pick(self, service: str) -> Instance:
        instances = self.instances(service)
        now = time.monotonic()
        healthy = [i for i in instances if self._ejected.get(i.address, 0.0) <= now]
        candidates = healthy or instances
        if not candidates:
            raise NoInstanceAvailable(f"no live instance of {service} is registered")
        counter = self._counters.setdefault(service, itertools.count())
        return candidates[next(counter) % len(candidates)]

    def _notify(self, instance: Instance, alive: bool) -> None:
        for listener in self.listeners:
            listener(instance, alive)


class ServiceDirectory:
    """Watches every service under /services/ and answers from memory."""

    def __init__(self, client: aetcd.Client, *, resync_delay: float = 0.5) -> None:
        self.cache = InstanceCache()
        self._changed = asyncio.Condition()
        self._follower = KeyRangeFollower(
            client,
            prefix_range(PREFIX.encode()),
            name="service directory",
            on_listing=self._on_listing,
            on_event=self._on_event,
            resync_delay=resync_delay,
        )

    async def start(self) -> None:
        self._follower.start()
        await self._follower.listed.wait()

    async def stop(self) -> None:
        await self._follower.stop()

    def pick(self, service: str) -> Instance:
        return self.cache.pick(service)

    def instances(self, service: str) -> list[Instance]:
        return self.cache.instances(service)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Waits until the cache satisfies ``predicate`` (e.g. 2 product instances)."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _on_listing(self, listing: rtypes.GetRange) -> None:
        instances = [
            instance
            for kv in listing
            if (instance := parse_instance(kv.key, kv.value, kv.lease)) is not None
        ]
        self.cache.replace_all(instances)
        await self._notify_changed()

    async def _on_event(self, event: rtypes.Event) -> None:
        key = event.kv.key
        if event.kind == rtypes.EventKind.PUT:
            instance = parse_instance(key, event.kv.value, event.kv.lease)
            if instance is not None:
                self.cache.upsert(instance)
        elif event.kind == rtypes.EventKind.DELETE:
            parts = key.decode().removeprefix(PREFIX).split("/")
            if len(parts) == 2:
                self.cache.remove(parts[0], parts[1])
        await self._notify_changed()

    async def _notify_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

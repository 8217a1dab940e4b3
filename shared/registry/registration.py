"""Keeps one instance registered under a lease for as long as it runs.

The key ``/services/<name>/<instance-id>`` holds {address, version, started_at,
metrics, http}
and lives on a lease kept alive every TTL/3. If the lease is lost (etcd lost
its state, or this process was paused past the TTL), a new lease is granted
and the key written again, so the instance heals itself. If etcd is down when
the instance starts, it serves anyway and registers as soon as etcd answers.
Shutdown revokes the lease first, so callers stop picking this instance before
it stops serving; ``withdraw`` does the same while the instance cannot serve
(its database is down) and ``start`` puts it back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import aetcd
from aetcd.exceptions import ClientError

from shared.registry.etcd import instance_key
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class ServiceRegistration:
    def __init__(
        self,
        client: aetcd.Client,
        *,
        service: str,
        instance_id: str,
        address: str,
        version: str,
        ttl_seconds: int = 5,
        metrics_address: str = "",
        http_address: str = "",
    ) -> None:
        self._client = client
        self.key = instance_key(service, instance_id)
        self._value = json.dumps(
            {
                "address": address,
                "version": version,
                "started_at": datetime.now(UTC).isoformat(),
                # Prometheus finds its scrape targets here (devstack/prometheus_targets.py).
                **({"metrics": metrics_address} if metrics_address else {}),
                **({"http": http_address} if http_address else {}),
            }
        ).encode()
        self._ttl = ttl_seconds
        self._lease: aetcd.Lease | None = None
        self._task: asyncio.Task[None] | None = None
        self.registrations = 0  # how many times the key was (re)written

    @property
    def lease_id(self) -> int | None:
        return self._lease.id if self._lease else None

    @property
    def lease(self) -> aetcd.Lease | None:
        """The lease in force; other keys of this instance may live and die with it."""
        return self._lease

    async def start(self) -> None:
        """Registers now if etcd answers (else logs, and the keepalive keeps trying),
        then keeps the lease alive."""
        if self._task is not None:
            return
        try:
            await self._register()
        except (ClientError, OSError) as exc:
            log.warning("cannot register %s yet (%s); retrying", self.key, exc)
        self._task = asyncio.create_task(self._keep_alive(), name=f"keepalive {self.key}")

    async def _register(self) -> None:
        lease = await self._client.lease(self._ttl)
        await self._client.put(self.key.encode(), self._value, lease=lease)
        self._lease = lease
        self.registrations += 1
        log.info("registered %s under lease %x (ttl %ss)", self.key, lease.id, self._ttl)

    async def _keep_alive(self) -> None:
        interval = self._ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if self._lease is None:
                    await self._register()
                    continue
                reply = await self._lease.refresh()
                if reply is None or reply.TTL <= 0:
                    log.warning(
                        "lease %x of %s is gone; registering again", self._lease.id, self.key
                    )
                    self._lease = None
                    await self._register()
            except (ClientError, OSError) as exc:
                # etcd is down or restarting: keep trying; the lease may still be alive.
                log.warning("keepalive of %s failed (%s); retrying", self.key, exc)

    async def abandon(self) -> None:
        """Stops the keepalive without revoking: what a crash or a long pause looks like."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def withdraw(self) -> None:
        """Deregisters (revoking the lease) until the next ``start``."""
        await self.stop()

    async def stop(self) -> None:
        """Revokes the lease (deleting the key) before anything else shuts down."""
        await self.abandon()
        if self._lease is not None:
            try:
                await self._lease.revoke()
                log.info("revoked lease %x; %s deregistered", self._lease.id, self.key)
            except (ClientError, OSError) as exc:
                log.warning(
                    "could not revoke lease of %s (%s); it expires in %ss", self.key, exc, self._ttl
                )
            self._lease = None

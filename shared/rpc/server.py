"""Runs one service instance: gRPC server, health, reflection, registry, shutdown.

Start-up order: serve, then register (so nobody is sent to a port that is not
listening), then report SERVING. Shutdown order is the reverse, and the lease
goes first: revoke (peers drop us from their caches), run the bindings'
``on_shutdown`` hooks (e.g. end long-lived streams, which would otherwise hold
the drain until the grace period expires), NOT_SERVING, then drain in-flight
RPCs for up to the grace period.

Readiness and liveness are two answers of the health service. Readiness (the
empty service name and each service's name) follows the database every second:
after ``READINESS_FAILURES`` failed checks in a row the instance withdraws from
etcd and answers NOT_SERVING, so discovery and Kubernetes' readiness probe route
around it; the first good check puts it back. Liveness (``LIVENESS``) stays
SERVING while the process runs its event loop: a database outage is not a
reason to restart the instance. Kafka is in neither answer: the outbox keeps
the events while the broker is away.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aetcd.exceptions import ClientError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer  # health.aio, typed

from shared.auth.jwks import JwksWatcher
from shared.auth.tokens import TokenVerifier
from shared.config.center import ConfigCenter, RuntimeConfig, publish_status
from shared.db.probe import DatabaseProbe
from shared.observability.metrics import CONFIG_REVISION, MetricsEndpoint
from shared.registry.etcd import service_etcd_client
from shared.registry.registration import ServiceRegistration
from shared.rpc.interceptors.auth import AccessPolicy
from shared.rpc.interceptors.chain import default_chain
from shared.rpc.reflection import enable_reflection
from shared.settings import ServiceSettings
from shared.tasks import PeriodicTask
from shared.tls import server_credentials

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024
# The health service name of the liveness answer (Kubernetes' livenessProbe asks it).
LIVENESS = "liveness"
READINESS_INTERVAL_SECONDS = 1.0
# One slow check is a blip; two in a row is an outage worth routing around.
READINESS_FAILURES = 2


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host: its full name and how to add its servicer."""

    full_name: str  # e.g. "shop.product.v1.ProductService"
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    # Run when the instance starts to stop, right after its lease is revoked.
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = ()
    # An HTTPS API the same process serves beside this servicer (the user service's
    # OAuth2 server), registered with the instance so the gateway finds it ("" if none).
    http_address: str = ""


def token_verifier(settings: ServiceSettings) -> TokenVerifier:
    """No keys yet: ServiceHost.start feeds it the JWKS from etcd, and keeps it current."""
    return TokenVerifier(
        [],
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )


class ServiceHost:
    """The running server of one instance; ``serve_until_stopped`` is the whole lifecycle."""

    def __init__(
        self,
        settings: ServiceSettings,
        bindings: Sequence[ServiceBinding],
        policy: AccessPolicy,
        config: ConfigCenter | None = None,
    ) -> None:
        self.settings = settings
        self._bindings = bindings
        self.verifier = token_verifier(settings)
        # The knobs in force (rate limits, faults, ...); fixed defaults if none is given.
        self.config = config or ConfigCenter.fixed(settings.service_name)
        # Which config revisions this instance applied, for `shopctl config status`:
        # written after registration, on every swap, and every few seconds.
        self._status = PeriodicTask("config status", self._publish_status, interval=5.0)
        self._database = DatabaseProbe(settings.pg_dsn)
        self._readiness = PeriodicTask(
            "readiness", self._check_readiness, interval=READINESS_INTERVAL_SECONDS
        )
        self.ready = False
        self._failed_checks = 0
        self.withdrawals = 0  # how often the database outage took this instance out
        self._names: list[str] = [""]  # the health names of readiness
        self._server = grpc.aio.server(
            interceptors=default_chain(
                self.verifier, policy, self.config, metrics=settings.metrics_enabled
            ),
            options=[
                ("grpc.so_reuseport", 0),
                # No request here is near this; a bigger one is RESOURCE_EXHAUSTED unread.
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ],
        )
        self._health = AsyncHealthServicer()
        # Kubernetes' native gRPC probes speak plaintext only: they get a port of their
        # own that serves the health service and nothing else (0: no such port).
        self._probe_server: grpc.aio.Server | None = None
        self._metrics: MetricsEndpoint | None = None
        self._stopping = asyncio.Event()
        self.port = 0
        self.health_port = 0
        self.metrics_port = 0
        self.registration: ServiceRegistration | None = None

    @property
    def address(self) -> str:
        host = self.settings.advertise_host or self.settings.host
        return f"{host}:{self.port}"

    @property
    def metrics_address(self) -> str:
        """Where Prometheus scrapes this instance ("" without metrics)."""
        if not self.metrics_port:
            return ""
        return f"{self.settings.advertise_host or self.settings.host}:{self.metrics_port}"

    async def start(self) -> None:
        for binding in self._bindings:
            binding.add_to_server(binding.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = [b.full_name for b in self._bindings]
        self._names = ["", *names]
        enable_reflection([*names, health.SERVICE_NAME], self._server)
        # mTLS only: callers need a client certificate of the stack's CA (pki/).
        self.port = self._server.add_secure_port(
            f"{self.settings.host}:{self.settings.port}",
            server_credentials(self.settings.tls_dir, self.settings.service_name),
        )
        await self._server.start()
        s = self.settings
        if s.health_port:
            self._probe_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._probe_server)
            self.health_port = self._probe_server.add_insecure_port(f"{s.host}:{s.health_port}")
            await self._probe_server.start()
        if s.metrics_enabled:
            self._metrics = MetricsEndpoint(s.host, s.metrics_port)
            self.metrics_port = self._metrics.start()
        self._etcd = service_etcd_client(s)
        # The signing keys: loaded now if etcd has them (never waiting for them to appear).
        self._jwks = JwksWatcher(self._etcd, self.verifier.replace_keys)
        await self._jwks.start()
        self.registration = ServiceRegistration(
            self._etcd,
            service=s.service_name,
            instance_id=s.instance_id,
            address=self.address,
            version=s.version,
            ttl_seconds=s.registry_ttl_seconds,
            metrics_address=self.metrics_address,
            http_address=next((b.http_address for b in self._bindings if b.http_address), ""),
        )
        await self._health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        for name in self._names:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.config.listeners.append(self._on_config)
        self._on_config(self.config.current)
        await self._check_readiness()
        self._readiness.start()
        self._status.start()
        log.info("%s %s serving on %s", s.service_name, s.instance_id, self.address)

    async def _check_readiness(self) -> None:
        if await self._database.check():
            self._failed_checks = 0
            if not self.ready:
                await self._become_ready()
            return
        self._failed_checks += 1
        if self.ready and self._failed_checks >= READINESS_FAILURES:
            await self._become_unready()

    async def _become_ready(self) -> None:
        assert self.registration is not None
        await self.registration.start()
        for name in self._names:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.ready = True
        self._status.wake()  # the config status lives on the lease just granted
        if self.withdrawals:
            log.info("database reachable again: %s is ready", self.settings.instance_id)

    async def _become_unready(self) -> None:
        assert self.registration is not None
        self.ready = False
        self.withdrawals += 1
        log.warning(
            "database unreachable: %s withdraws (NOT_SERVING) until it is back",
            self.settings.instance_id,
        )
        await self.registration.withdraw()
        for name in self._names:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def request_stop(self) -> None:
        self._stopping.set()

    def _on_config(self, config: RuntimeConfig) -> None:
        CONFIG_REVISION.set(max(config.revisions.values(), default=0))
        self._status.wake()

    async def _publish_status(self) -> float | None:
        registration = self.registration
        if registration is not None and registration.lease is not None:
            try:
                await publish_status(
                    self._etcd, self.config, self.settings.instance_id, registration.lease
                )
            except (ClientError, OSError) as error:
                # etcd is down, or the lease expired (a pause past its TTL) and the
                # registration is granting a new one: soon again, on that one.
                log.warning("config status not published (%s); again in 1 s", error)
                return 1.0
        return None

    async def wait_for_stop_signal(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        await self._stopping.wait()

    async def stop(self) -> None:
        await self._readiness.stop()
        await self._database.close()
        await self._status.stop()
        if self._on_config in self.config.listeners:
            self.config.listeners.remove(self._on_config)
        if self.registration is not None:
            await self.registration.stop()
        for binding in self._bindings:
            for hook in binding.on_shutdown:
                try:
                    await hook()
                except Exception:  # the server must still stop
                    log.exception("on_shutdown hook of %s failed", binding.full_name)
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.settings.shutdown_grace_seconds)
        if self._probe_server is not None:
            await self._probe_server.stop(None)
        if self._metrics is not None:
            self._metrics.stop()
        await self._jwks.stop()
        await self._etcd.close()
        log.info("%s %s stopped", self.settings.service_name, self.settings.instance_id)

    async def serve_until_stopped(self) -> None:
        await self.start()
        try:
            await self.wait_for_stop_signal()
        finally:
            await self.stop()

"""Runs one gateway instance, the way shared/service.py and shared/rpc/server.py run a
service: wait for the database, migrate, open the config center, trace, serve, register.

Start-up: the database (waited for), its migrations, the config center (the breaker,
retry and deadline knobs of its gRPC calls, read live), the service directory and the
JWKS watch on etcd (neither waited for past 2 s), the metrics port, then HTTP on
``http_port``, then the registration ``/services/gateway/<instance_id>`` with
``http`` (its HTTP address) and ``metrics``. Readiness follows the database every
second as a service's does: two failed checks withdraw the registration, and
``/healthz/ready`` answers 503, until a good check puts it back. Shutdown revokes the
lease first, then lets requests in flight finish for ``shutdown_grace_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Generator
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import httpx
import uvicorn

from gateway.app import create_app
from gateway.auth import Authenticator
from gateway.backends import GrpcBackends
from gateway.carts import PostgresCartStore
from gateway.idempotency import PostgresIdempotencyStore
from gateway.oauth_proxy import ClientCredentials, OAuthProxy, upstream_context
from gateway.sessions import PostgresSessionStore
from gateway.settings import GatewaySettings
from gateway.state import Gateway
from shared.auth.jwks import JwksWatcher
from shared.db.migrations import apply_migrations
from shared.db.pool import service_pool
from shared.db.probe import DatabaseProbe
from shared.observability.metrics import MetricsEndpoint
from shared.observability.tracing import (
    LiveRatioSampler,
    start_tracing,
    stop_tracing,
    zipkin_exporter,
)
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import service_etcd_client
from shared.registry.registration import ServiceRegistration
from shared.rpc.client import ServiceClients
from shared.rpc.server import READINESS_FAILURES, READINESS_INTERVAL_SECONDS, token_verifier
from shared.service import open_config, wait_for_database
from shared.tasks import PeriodicTask
from shared.tls import ClientTLS

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
DIRECTORY_WAIT_SECONDS = 2.0
PURGE_INTERVAL_SECONDS = 600.0


async def migrate(settings: GatewaySettings) -> list[str]:
    return await apply_migrations(settings.database_dsn(), MIGRATIONS)


def http_listener(host: str, port: int) -> socket.socket:
    """The HTTP port's socket, bound. Made as a TCP socket by name (``IPPROTO_TCP``, not
    0): asyncio turns Nagle's algorithm off (TCP_NODELAY) only on the connections of a
    socket whose ``proto`` says TCP, and with it on, the body of every answer on a kept-
    alive connection waited for the client's delayed ACK of its headers: about 40 ms a
    request, found by `make bench-edge` (docs/performance.md)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    return listener


class _Uvicorn(uvicorn.Server):
    """uvicorn, without its own signal handlers: the gateway stops in its own order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class GatewayServer:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._resources = AsyncExitStack()
        self._stopping = asyncio.Event()
        self._failed_checks = 0
        self._database_ok = False
        self.http_port = 0
        self.metrics_port = 0
        self.gateway: Gateway | None = None
        self.registration: ServiceRegistration | None = None
        self._server: _Uvicorn | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def host(self) -> str:
        return self.settings.advertise_host or self.settings.host

    @property
    def http_address(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls_enabled else "http"
        return f"{scheme}://{self.http_address}"

    async def start(self) -> None:
        s = self.settings
        await wait_for_database(s.database_dsn())
        await migrate(s)
        resources = self._resources
        config = await resources.enter_async_context(open_config(s))
        if s.trace_endpoint:
            start_tracing(
                s.service_name,
                s.instance_id,
                zipkin_exporter(s.trace_endpoint),
                LiveRatioSampler(lambda: config.current.tracing.sample_ratio),
            )
            # Off the loop: the exporter's last flush is a blocking HTTP call.
            resources.push_async_callback(asyncio.to_thread, stop_tracing)
        pool = await resources.enter_async_context(service_pool(s))
        etcd = service_etcd_client(s)
        resources.push_async_callback(etcd.close)
        directory = ServiceDirectory(etcd)
        resources.push_async_callback(directory.stop)
        with contextlib.suppress(TimeoutError):  # it fills in the background meanwhile
            async with asyncio.timeout(DIRECTORY_WAIT_SECONDS):
                await directory.start()
        clients = ServiceClients(directory, ClientTLS(s.tls_dir, s.service_name), config=config)
        resources.push_async_callback(clients.close)
        verifier = token_verifier(s)
        jwks = JwksWatcher(etcd, verifier.replace_keys)
        await jwks.start()
        resources.push_async_callback(jwks.stop)
        http = httpx.AsyncClient(verify=upstream_context(s.tls_dir, s.service_name))
        resources.push_async_callback(http.aclose)
        oauth = OAuthProxy(directory, http)
        secret = s.oauth_client_secret_file
        probe = DatabaseProbe(s.database_dsn())
        resources.push_async_callback(probe.close)
        self.gateway = Gateway(
            settings=s,
            auth=Authenticator(verifier),
            backends=GrpcBackends(clients, s.grpc_timeout_seconds),
            sessions=PostgresSessionStore(pool, timedelta(seconds=s.session_ttl_seconds)),
            carts=PostgresCartStore(pool),
            idempotency=PostgresIdempotencyStore(
                pool, timedelta(seconds=s.idempotency_ttl_seconds)
            ),
            anonymous_token=ClientCredentials(oauth, s.oauth_client_id, secret) if secret else None,
            oauth=oauth,
            database_ok=lambda: self._database_ok,
        )
        if s.metrics_enabled:
            metrics = MetricsEndpoint(s.host, s.metrics_port)
            self.metrics_port = metrics.start()
            resources.callback(metrics.stop)
        await self._serve_http()
        self.registration = ServiceRegistration(
            etcd,
            service=s.service_name,
            instance_id=s.instance_id,
            address=self.http_address,
            version=s.version,
            ttl_seconds=s.registry_ttl_seconds,
            metrics_address=f"{self.host}:{self.metrics_port}" if self.metrics_port else "",
            http_address=self.http_address,
        )
        readiness = PeriodicTask(
            "readiness", lambda: self._check_readiness(probe), interval=READINESS_INTERVAL_SECONDS
        )
        await self._check_readiness(probe)
        readiness.start()
        resources.push_async_callback(readiness.stop)
        purge = PeriodicTask("purge", self._purge, interval=PURGE_INTERVAL_SECONDS)
        purge.start()
        resources.push_async_callback(purge.stop)
        log.info("gateway %s serving on %s", s.instance_id, self.url)

    async def _serve_http(self) -> None:
        s = self.settings
        assert self.gateway is not None
        listener = http_listener(s.host, s.http_port)
        self.http_port = listener.getsockname()[1]
        config = uvicorn.Config(
            create_app(s, self.gateway),
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, int(s.shutdown_grace_seconds)),
            ssl_certfile=str(s.tls_cert_file) if s.tls_cert_file else None,
            ssl_keyfile=str(s.tls_key_file) if s.tls_key_file else None,
        )
        self._server = _Uvicorn(config)
        self._serving = asyncio.create_task(self._server.serve([listener]), name="http")
        while not self._server.started:
            if self._serving.done():
                await self._serving  # raises what stopped it
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.02)

    async def _check_readiness(self, probe: DatabaseProbe) -> None:
        assert self.registration is not None
        if await probe.check():
            self._failed_checks = 0
            if not self._database_ok:
                self._database_ok = True
                await self.registration.start()
            return
        self._failed_checks += 1
        if self._database_ok and self._failed_checks >= READINESS_FAILURES:
            log.warning("database unreachable: the gateway withdraws until it is back")
            self._database_ok = False
            await self.registration.withdraw()

    async def _purge(self) -> None:
        if self.gateway is None or not self._database_ok:
            return
        try:
            sessions = await self.gateway.sessions.purge_expired()
            keys = await self.gateway.idempotency.purge()
        except Exception as error:  # the next round tries again
            log.warning("purge of expired sessions and keys failed: %s", error)
            return
        if sessions or keys:
            log.info("purged %d expired sessions and %d idempotency keys", sessions, keys)

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        if self.registration is not None:
            await self.registration.stop()  # first: callers stop picking this instance
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._serving
        await self._resources.aclose()
        log.info("gateway %s stopped", self.settings.instance_id)

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            await self.stop()

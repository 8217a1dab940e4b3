"""What a service is, to the kit: settings, migrations, access rules, servicers.

Each service's ``main.py`` declares one ``ServiceDefinition``; the command line,
``make run``, the tests and the Kubernetes manifests all start a service
through it, so every service starts, migrates and stops the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import typer

from shared.config.center import ConfigCenter
from shared.config.models import ServiceKnobs
from shared.db.migrations import apply_migrations
from shared.db.probe import DatabaseProbe
from shared.logs import apply_log_level, configure_logging
from shared.messaging.outbox import MIGRATIONS as MESSAGING_MIGRATIONS
from shared.observability.tracing import (
    LiveRatioSampler,
    start_tracing,
    stop_tracing,
    zipkin_exporter,
)
from shared.registry.etcd import service_etcd_client
from shared.rpc.interceptors.auth import AccessPolicy
from shared.rpc.server import ServiceBinding, ServiceHost
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

DATABASE_WAIT_START, DATABASE_WAIT_MAX = 0.2, 2.0

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


@dataclass(frozen=True)
class ServiceDefinition(Generic[SettingsT]):
    settings_type: type[SettingsT]
    migrations: Path
    access: AccessPolicy
    # Opens the service's resources (pool, clients) and yields its gRPC bindings; the
    # config center gives the knobs that may change while it runs.
    bindings: Callable[[SettingsT, ConfigCenter], AbstractAsyncContextManager[list[ServiceBinding]]]
    # The model of its /config/<service> document: its own knobs, if it has any.
    knobs: type[ServiceKnobs] = ServiceKnobs

    @property
    def name(self) -> str:
        return self.settings_type.service_name

    async def migrate(self, settings: SettingsT) -> list[str]:
        """The messaging tables (outbox, processed events) first, then the service's own."""
        dsn = settings.database_dsn()
        applied = await apply_migrations(dsn, MESSAGING_MIGRATIONS)
        return applied + await apply_migrations(dsn, self.migrations)

    async def serve(self, settings: SettingsT) -> None:
        """Wait for the database, migrate, then serve until SIGINT/SIGTERM."""
        await wait_for_database(settings.database_dsn())
        await self.migrate(settings)
        async with open_config(settings, self.knobs) as config:
            if settings.trace_endpoint:
                start_tracing(
                    settings.service_name,
                    settings.instance_id,
                    zipkin_exporter(settings.trace_endpoint),
                    LiveRatioSampler(lambda: config.current.tracing.sample_ratio),
                )
            try:
                async with self.bindings(settings, config) as bindings:
                    await ServiceHost(settings, bindings, self.access, config).serve_until_stopped()
            finally:
                # Off the loop: the exporter's last flush is a blocking HTTP call.
                await asyncio.to_thread(stop_tracing)

    def cli(self) -> None:
        app = typer.Typer(add_completion=False, help=f"The {self.name} service.")

        @app.command("serve")
        def serve_command() -> None:
            """Apply pending migrations, then serve until SIGINT/SIGTERM."""
            settings = self.settings_type()
            configure_logging(settings.log_level, settings)
            _require_database(settings)
            asyncio.run(self.serve(settings))

        @app.command("migrate")
        def migrate_command() -> None:
            """Apply pending migrations and exit (a Kubernetes init container runs this)."""
            settings = self.settings_type()
            configure_logging(settings.log_level)
            _require_database(settings)
            asyncio.run(self.migrate(settings))

        app()


def _require_database(settings: ServiceSettings) -> None:
    """Exit with the reason, not a traceback, when no DSN is configured."""
    try:
        settings.database_dsn()
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None


async def wait_for_database(dsn: str) -> None:
    """The one thing an instance cannot serve without: waited for, not crashed on, so an
    instance (re)started during a database restart comes up as soon as it is back."""
    probe = DatabaseProbe(dsn)
    delay = DATABASE_WAIT_START
    try:
        while not await probe.check():
            log.warning("database unreachable; trying again in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, DATABASE_WAIT_MAX)
    finally:
        await probe.close()


def knob_defaults(settings: ServiceSettings, knobs: type[ServiceKnobs]) -> dict[str, Any]:
    """The environment's values of the service's own knobs (the saga timeout, say): the
    defaults until a document in the config center names them."""
    own = set(knobs.model_fields) - set(ServiceKnobs.model_fields)
    return {name: getattr(settings, name) for name in own if name in type(settings).model_fields}


@contextlib.asynccontextmanager
async def open_config(
    settings: ServiceSettings, knobs: type[ServiceKnobs] = ServiceKnobs
) -> AsyncIterator[ConfigCenter]:
    """The service's config center, following etcd until the block ends; ``knobs`` is the
    model of the service's own document."""
    client = service_etcd_client(settings)
    center = ConfigCenter(settings.service_name, knob_defaults(settings, knobs), knobs=knobs)
    center.listeners.append(lambda config: apply_log_level(config.log_level or settings.log_level))
    try:
        await center.start(client)
        apply_log_level(center.current.log_level or settings.log_level)
        yield center
    finally:
        await center.stop()
        await client.close()

"""Starting real service instances in the test process, on the test stack."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc

from devstack import launcher
from devstack.stack import Stack
from shared.rpc.server import ServiceHost
from shared.service import ServiceDefinition, open_config
from shared.tls import ClientTLS
from tests.support.tokens import TestKeys


def database_name(service: str) -> str:
    return f"shop_{service}"


async def recreate_database(stack: Stack, service: str) -> str:
    """A fresh, empty database for the service; returns its DSN."""
    return await launcher.recreate_database(stack, database_name(service))


@dataclass
class RunningService:
    host: ServiceHost
    channel: grpc.aio.Channel  # mTLS as the operator
    dsn: str
    tls: ClientTLS

    def new_channel(self) -> grpc.aio.Channel:
        """Another operator channel to this instance; the caller closes it."""
        return self.tls.channel(self.host.address, self.host.settings.service_name)

    async def count(self, table: str) -> int:
        conn = await asyncpg.connect(self.dsn)
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def run_service(
    definition: ServiceDefinition[Any], stack: Stack, keys: TestKeys, **overrides: Any
) -> AsyncIterator[RunningService]:
    """Migrates, serves on a free port, registers in etcd; stops on exit.

    The test keys' public key is published as the JWKS first, so tokens minted with
    ``keys`` verify; the user service imports their private key as its bootstrap key
    (on an empty table) and publishes its own JWKS.
    """
    dsn = stack.pg_service_dsn(definition.name)
    if "jwt_private_key_file" in definition.settings_type.model_fields:
        overrides.setdefault("jwt_private_key_file", keys.private_key_file)
    await keys.publish(stack.etcd_endpoint, stack.tls_dir)
    settings = definition.settings_type(
        **{
            "port": 0,
            "etcd_endpoint": stack.etcd_endpoint,
            "kafka_bootstrap": stack.kafka_bootstrap,
            "pg_dsn": dsn,
            "tls_dir": stack.tls_dir,
            "registry_ttl_seconds": 2,
            "shutdown_grace_seconds": 1.0,
            **overrides,
        }
    )
    await definition.migrate(settings)
    async with (
        open_config(settings, definition.knobs) as config,
        definition.bindings(settings, config) as bindings,
    ):
        host = ServiceHost(settings, bindings, definition.access, config)
        await host.start()
        tls = ClientTLS.operator(settings.tls_dir)
        channel = tls.channel(host.address, definition.name)
        try:
            yield RunningService(host, channel, dsn, tls)
        finally:
            await channel.close(grace=None)
            await host.stop()

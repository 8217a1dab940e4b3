"""The whole system as separate processes on the test stack."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import pytest_asyncio

from devstack.launcher import SystemLauncher, open_directory, wipe_system_data
from devstack.stack import Stack
from ops.seed import seed
from shared.registry.discovery import ServiceDirectory
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS
from tests.support.tokens import TestKeys

E2E_TTL = 3


@dataclass
class RunningSystem:
    stack: Stack
    keys: TestKeys
    launcher: SystemLauncher
    directory: ServiceDirectory
    clients: ServiceClients
    products: dict[str, str]  # sku -> product id
    logs: list[str]
    # The storefront's origin when the system runs the gateway ("" without it).
    gateway_url: str = ""


@contextlib.asynccontextmanager
async def running_system(
    stack: Stack,
    keys: TestKeys,
    *,
    replicas: Mapping[str, int] | None = None,
    extra_env: Mapping[str, str] | None = None,
    supervise: bool = False,
    gateway: bool = False,
) -> AsyncIterator[RunningSystem]:
    """Fresh databases and topics, every service as its own process, the demo data seeded;
    with ``gateway``, the gateway too, on a free port. Its origin is then the tokens'
    issuer, so the keys the system yields sign for it."""
    await wipe_system_data(stack)
    logs: list[str] = []
    launcher = SystemLauncher(
        stack,
        keys.directory,
        replicas=replicas or {},
        registry_ttl_seconds=E2E_TTL,
        extra_env=extra_env or {},
        log_sink=logs.append,
        supervise=supervise,
        gateway=gateway,
    )
    if gateway:
        keys = dataclasses.replace(keys, issuer_url=launcher.public_url)
    async with open_directory(stack) as directory:
        clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
        try:
            await launcher.start_all()
            await launcher.wait_ready(directory, timeout=90)
            products = await seed(clients, stack.pg_service_dsn("user"))
            gateway_url = launcher.public_url if gateway else ""
            yield RunningSystem(
                stack, keys, launcher, directory, clients, products, logs, gateway_url
            )
        finally:
            await clients.close()
            await launcher.stop_all()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningSystem]:
    """Two product instances, so one can be killed."""
    async with running_system(stack, keys, replicas={"product": 2}) as running:
        yield running

"""The image `make image` builds, running all five services as containers on the test stack.

The containers run as a pod would: read-only root, no capabilities, the image's
non-root user, secrets mounted read-only, and the host's network to reach the test
stack's PostgreSQL, etcd and Kafka. They must register, answer SERVING, carry an order
to CONFIRMED and, on SIGTERM, revoke their leases before they drain and exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.stack import Stack
from shared.registry.discovery import ServiceDirectory
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS
from shop.order.v1 import order_pb2
from tests.support.tokens import TestKeys
from tools.image import IMAGE, ContainerRun, Engine
from tools.launcher import SERVICES, SystemLauncher, open_directory, wipe_system_data
from tools.seed import seed
from tools.smoke import place_demo_order

pytestmark = pytest.mark.e2e

# Long enough that a key gone right after the stop can only have been revoked.
LEASE_TTL = 30
IMAGE_REF = f"{IMAGE}:dev"


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine.detect()
    assert engine.has_image(IMAGE_REF), f"{IMAGE_REF} is missing: `make image` builds it"
    return engine


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def containers(
    stack: Stack, keys: TestKeys, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[SystemLauncher, ServiceDirectory, ServiceClients, list[str]]]:
    await wipe_system_data(stack)
    work = tmp_path_factory.mktemp("container-secrets")
    # The directory must be searchable by the image's user, as a Secret volume would be.
    for parent in [work, *work.parents]:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    run = ContainerRun.prepare(engine, IMAGE_REF, stack.tls_dir, keys.directory, work)
    logs: list[str] = []
    launcher = SystemLauncher(
        stack,
        keys.directory,
        registry_ttl_seconds=LEASE_TTL,
        log_sink=logs.append,
        container=run,
    )
    async with open_directory(stack) as directory:
        clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
        try:
            await launcher.start_all()
            await launcher.wait_ready(directory, timeout=120)
            await seed(clients, stack.pg_dsn("shop_user"))
            yield launcher, directory, clients, logs
        finally:
            await clients.close()
            await launcher.stop_all(grace=20)


async def test_every_service_registers_and_serves_from_its_container(containers) -> None:
    launcher, directory, _, logs = containers
    for service in SERVICES:
        registered = {i.instance_id for i in directory.instances(service)}
        assert launcher.expected()[service] <= registered, service
    # The instances really are containers of the image, as its non-root user.
    assert all(p.process.returncode is None for p in launcher.processes)
    assert not any("Traceback" in line for line in logs), "\n".join(logs[-40:])


async def test_an_order_through_the_containers_is_confirmed(containers) -> None:
    _, _, clients, _ = containers
    order = await place_demo_order(clients)
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED, order


async def test_sigterm_revokes_the_leases_then_drains(containers, stack: Stack) -> None:
    launcher, _, _, logs = containers
    processes = list(launcher.processes)
    started = asyncio.get_running_loop().time()
    await launcher.stop_all(grace=20)
    took = asyncio.get_running_loop().time() - started
    assert [p.process.returncode for p in processes] == [0] * len(processes), logs[-40:]
    # Gone well within the lease TTL: revoked, not expired.
    assert took < LEASE_TTL / 2
    async with open_directory(stack) as fresh:
        assert all(not fresh.instances(s) for s in SERVICES)
    for child in processes:
        mine = [line for line in logs if line.startswith(f"{child.service:<9}|")]
        revoked = next(i for i, line in enumerate(mine) if "revoked lease" in line)
        stopped = next(i for i, line in enumerate(mine) if line.rstrip().endswith("stopped"))
        assert revoked < stopped, mine

"""`make demo-config`'s core against the whole system on the test stack."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from demos.config import run_demo
from devstack.launcher import REPO_ROOT
from ops.config_admin import SCOPES
from ops.seed import CUSTOMER
from shared.config import store
from shared.config.center import config_key
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS
from tests.e2e.conftest import RunningSystem

pytestmark = pytest.mark.e2e


async def test_demo_config_applies_refuses_and_rolls_back(system: RunningSystem) -> None:
    client = etcd_client(system.stack.etcd_endpoint, tls=ClientTLS.operator(system.stack.tls_dir))
    try:
        result = await run_demo(client, system.directory)
        assert result.ok, result.summary
        assert result.summary.startswith("demo-config: applied rev ")
        assert "on 6/6 instances" in result.summary
        assert result.summary.endswith("invalid refused; rollback ok")
    finally:
        # The test stack's etcd outlives this test: no knob left behind.
        await client.delete(config_key("global").encode())
        await client.delete_prefix(f"{store.HISTORY_PREFIX}global/".encode())
        await client.close()


def shopctl(system: RunningSystem, *args: str) -> subprocess.CompletedProcess[str]:
    """docs/config-center.md's `shopctl config` lines, pointed at the test stack."""
    return run_shopctl(system, "config", *args)


def run_shopctl(system: RunningSystem, *command: str) -> subprocess.CompletedProcess[str]:
    """`python -m ops.shopctl <command>` as the operator, against the test stack's etcd."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.shopctl",
            "--tls-dir",
            str(system.stack.tls_dir),
            *command,
            "--etcd",
            system.stack.etcd_endpoint,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_documented_shopctl_config_commands(system: RunningSystem) -> None:
    client = etcd_client(system.stack.etcd_endpoint, tls=ClientTLS.operator(system.stack.tls_dir))
    try:
        got = await asyncio.to_thread(shopctl, system, "get", "global")
        assert got.returncode == 0 and "# global @ revision" in got.stdout, got.stderr
        done = await asyncio.to_thread(
            shopctl, system, "set", "order", '{"saga_timeout_seconds": 60}'
        )
        assert done.returncode == 0, done.stderr
        assert "applied by 1 instances" in done.stdout
        assert (await store.read(client, SCOPES, "order")).document == {"saga_timeout_seconds": 60}
        again = await asyncio.to_thread(
            shopctl,
            system,
            "set",
            "order",
            '{"saga_timeout_seconds": 90}',
            "--expect-revision",
            "1",
        )
        assert again.returncode == 1 and "read it again" in again.stderr
        bad = await asyncio.to_thread(shopctl, system, "set", "order", '{"saga_timeout": 60}')
        assert bad.returncode == 1 and "Extra inputs are not permitted" in bad.stderr
        await asyncio.to_thread(shopctl, system, "set", "order", '{"saga_timeout_seconds": 75}')
        history = await asyncio.to_thread(shopctl, system, "history", "order")
        assert history.returncode == 0 and history.stdout.count("admin@shop.local") == 2
        back = await asyncio.to_thread(shopctl, system, "rollback", "order")
        assert back.returncode == 0 and "rolled order back to entry" in back.stdout
        assert (await store.read(client, SCOPES, "order")).document == {"saga_timeout_seconds": 60}
        status = await asyncio.to_thread(shopctl, system, "status")
        assert status.returncode == 0 and "order" in status.stdout
        customer = await asyncio.to_thread(
            shopctl,
            system,
            "set",
            "order",
            "{}",
            "--email",
            CUSTOMER[0],
            "--password",
            CUSTOMER[1],
        )
        assert customer.returncode == 1 and "is not an admin" in customer.stderr
    finally:
        await client.delete(config_key("order").encode())
        await client.delete_prefix(f"{store.HISTORY_PREFIX}order/".encode())
        await client.close()


async def test_shopctl_instances_lists_every_registered_instance(system: RunningSystem) -> None:
    listed = await asyncio.to_thread(run_shopctl, system, "instances")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert {row[0] for row in rows} == {"user", "product", "inventory", "payment", "order"}
    assert all(":" in row[2] for row in rows)  # host:port, as peers dial it

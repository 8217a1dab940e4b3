"""Registration and discovery against the real etcd of the test stack."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator

import aetcd
import pytest
import pytest_asyncio

from devstack.stack import Stack
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import EtcdClient, etcd_client, instance_key
from shared.registry.registration import ServiceRegistration
from shared.tls import ClientTLS

pytestmark = pytest.mark.integration
TTL = 2
# etcd lets a party write only its own registrations: the tests register as a real
# service, with their own instance ids, and look only at those.
SERVICE = "inventory"


@pytest_asyncio.fixture(loop_scope="session")
async def etcd(stack: Stack) -> AsyncIterator[aetcd.Client]:
    client = as_service(stack)
    yield client
    await client.close()


def as_service(stack: Stack) -> EtcdClient:
    return etcd_client(stack.etcd_endpoint, tls=ClientTLS(stack.tls_dir, SERVICE))


def registration(
    client: aetcd.Client, name: str, instance_id: str | None = None, address: str = "127.0.0.1:1"
) -> ServiceRegistration:
    return ServiceRegistration(
        client,
        service=SERVICE,
        instance_id=f"{name}-{instance_id or uuid.uuid4().hex}",
        address=address,
        version="test",
        ttl_seconds=TTL,
    )


async def wait_for_key(client: aetcd.Client, key: str, present: bool, timeout: float) -> float:
    """Seconds until the key is present (or absent); fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < timeout:
        try:
            found = await client.get(key.encode()) is not None
        except aetcd.exceptions.ClientError:
            found = not present  # etcd still starting: not yet the state we wait for
        if found == present:
            return loop.time() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"{key} still {'absent' if present else 'present'} after {timeout}s")


async def test_key_lives_while_keepalive_runs_and_goes_after_ttl_once_it_stops(
    etcd: aetcd.Client,
) -> None:
    reg = registration(etcd, "reg-expiry")
    await reg.start()
    await asyncio.sleep(TTL * 2)  # well past one TTL: only keepalive can explain survival
    assert await etcd.get(reg.key.encode()) is not None
    await reg.abandon()
    elapsed = await wait_for_key(etcd, reg.key, present=False, timeout=TTL + 1.5)
    assert elapsed <= TTL + 1.5


async def test_stop_revokes_the_lease_at_once(etcd: aetcd.Client) -> None:
    reg = registration(etcd, "reg-revoke")
    await reg.start()
    await reg.stop()
    assert await etcd.get(reg.key.encode()) is None


async def test_lost_lease_is_replaced_and_the_key_written_again(etcd: aetcd.Client) -> None:
    reg = registration(etcd, "reg-lost")
    await reg.start()
    first_lease = reg.lease_id
    assert first_lease is not None
    await etcd.revoke_lease(first_lease)  # as if the process had been paused past the TTL
    await wait_for_key(etcd, reg.key, present=True, timeout=TTL * 2)
    stored = await etcd.get(reg.key.encode())
    assert stored is not None and stored.lease != first_lease
    assert reg.registrations == 2
    await reg.stop()


async def test_instance_registers_again_after_etcd_restarts_empty(stack: Stack) -> None:
    """etcd comes back with no state at all: the instance must heal on its own."""
    client = as_service(stack)
    reg = registration(client, "reg-restart")
    await reg.start()
    try:
        await asyncio.to_thread(stack.stop, "etcd")
        shutil.rmtree(stack.etcd.data_dir)
        await asyncio.to_thread(stack.start, "etcd")
        await wait_for_key(client, reg.key, present=True, timeout=TTL * 4)
        # The key can be seen a moment before the registration counts its put (both wait
        # on etcd's answers on one loop): the count follows within a few turns.
        for _ in range(50):
            if reg.registrations >= 2:
                break
            await asyncio.sleep(0.02)
        assert reg.registrations >= 2
    finally:
        await reg.stop()
        await client.close()


async def test_instance_survives_an_etcd_restart_that_keeps_its_data(stack: Stack) -> None:
    client = as_service(stack)
    reg = registration(client, "reg-bounce")
    await reg.start()
    try:
        await asyncio.to_thread(stack.stop, "etcd")
        await asyncio.to_thread(stack.start, "etcd")
        await asyncio.sleep(TTL * 2)
        await wait_for_key(client, reg.key, present=True, timeout=TTL * 2)
    finally:
        await reg.stop()
        await client.close()


async def test_discovery_sees_instances_come_and_go(etcd: aetcd.Client) -> None:
    directory = ServiceDirectory(etcd)
    await directory.start()
    name = f"disc-{uuid.uuid4().hex[:6]}"
    one = registration(etcd, name, "one", "127.0.0.1:1001")
    two = registration(etcd, name, "two", "127.0.0.1:1002")

    def mine() -> dict[str, str]:
        instances = directory.instances(SERVICE)
        return {i.instance_id: i.address for i in instances if i.instance_id.startswith(name)}

    try:
        await one.start()
        await two.start()
        async with asyncio.timeout(3):
            await directory.wait_until(lambda: len(mine()) == 2)
        assert set(mine().values()) == {"127.0.0.1:1001", "127.0.0.1:1002"}
        await one.stop()
        async with asyncio.timeout(1):  # a revoke is seen through the watch, not after a TTL
            await directory.wait_until(lambda: len(mine()) == 1)
        assert set(mine()) == {f"{name}-two"}
        await two.abandon()
        async with asyncio.timeout(TTL + 1.5):  # expiry is seen as soon as etcd deletes the key
            await directory.wait_until(lambda: not mine())
    finally:
        await one.stop()
        await two.stop()
        await directory.stop()


async def test_discovery_resyncs_after_etcd_restarts(stack: Stack) -> None:
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    directory = ServiceDirectory(client)
    await directory.start()
    writer = as_service(stack)
    late = f"resync-{uuid.uuid4().hex[:6]}"
    try:
        await asyncio.to_thread(stack.stop, "etcd")
        await asyncio.to_thread(stack.start, "etcd")
        lease = await writer.lease(30)
        await writer.put(
            instance_key(SERVICE, late).encode(), b'{"address": "127.0.0.1:1003"}', lease=lease
        )
        async with asyncio.timeout(10):
            await directory.wait_until(
                lambda: any(i.instance_id == late for i in directory.instances(SERVICE))
            )
        await lease.revoke()
    finally:
        await directory.stop()
        await client.close()
        await writer.close()

"""`make demo-retry` and `make demo-breaker`'s cores against the whole system on the test
stack; demo-breaker stops the launcher's own product process (SIGSTOP), not `make run`'s."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aetcd
import pytest
import pytest_asyncio

from demos import breaker, retry
from devstack.stack import Stack
from shared.config import store
from shared.config.center import config_key
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS
from tests.e2e.conftest import RunningSystem, running_system
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningSystem]:
    async with running_system(stack, keys) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def etcd(system: RunningSystem) -> AsyncIterator[aetcd.Client]:
    client = etcd_client(system.stack.etcd_endpoint, tls=ClientTLS.operator(system.stack.tls_dir))
    try:
        yield client
    finally:
        # The test stack's etcd outlives this test: no knob left behind.
        for scope in ("product", "order"):
            await client.delete(config_key(scope).encode())
            await client.delete_prefix(f"{store.HISTORY_PREFIX}{scope}/".encode())
        await client.close()


async def test_demo_retry_raises_the_success_rate_and_tries_a_bad_argument_once(
    system: RunningSystem, etcd: aetcd.Client
) -> None:
    result = await retry.run_demo(
        etcd, system.directory, ClientTLS.operator(system.stack.tls_dir), reads=120
    )
    assert result.ok, result.summary
    match = re.fullmatch(
        r"demo-retry: success without ([\d.]+)%, with ([\d.]+)%; INVALID_ARGUMENT attempts 1",
        result.summary,
    )
    assert match, result.summary
    assert float(match[1]) < float(match[2])
    assert await etcd.get(config_key("product").encode()) is None  # restored: there was none


async def test_demo_breaker_opens_fails_fast_degrades_and_closes_again(
    system: RunningSystem, etcd: aetcd.Client
) -> None:
    pids = [p.process.pid for p in system.launcher.processes if p.service == "product"]
    assert pids
    result = await breaker.run_demo(
        etcd, system.directory, ClientTLS.operator(system.stack.tls_dir), pids
    )
    assert result.ok, result.summary
    match = re.fullmatch(
        r"demo-breaker: open after (\d+) failures, fast-fail p95 ([\d.]+) ms,"
        r" degraded orders (\d+), closed again after ([\d.]+) s",
        result.summary,
    )
    assert match, result.summary
    assert int(match[1]) == 5  # the default failure_threshold
    assert float(match[2]) < 100  # vs the 300 ms deadline each slow failure waited
    assert int(match[3]) == breaker.DEGRADED_ORDERS
    assert await etcd.get(config_key("order").encode()) is None

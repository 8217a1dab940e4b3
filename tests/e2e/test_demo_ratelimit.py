"""`make demo-ratelimit`'s core against the whole system, each service its own process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aetcd
import pytest
import pytest_asyncio

from demos.ratelimit import run_demo
from devstack.stack import Stack
from ops.config_admin import SCOPES
from shared.config import store
from shared.config.center import config_key
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS
from tests.e2e.conftest import RunningSystem, running_system
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e

GLOBAL = config_key("global").encode()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningSystem]:
    async with running_system(stack, keys) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def etcd(stack: Stack) -> AsyncIterator[aetcd.Client]:
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    await client.delete(GLOBAL)
    try:
        yield client
    finally:
        # The test stack's etcd outlives this module: leave no document or history behind.
        await client.delete(GLOBAL)
        await client.delete_prefix(f"{store.HISTORY_PREFIX}global/".encode())
        await client.close()


async def test_the_demo_limits_one_buyer_and_not_the_other(
    system: RunningSystem, etcd: aetcd.Client
) -> None:
    lines: list[str] = []
    result = await run_demo(system.clients, etcd, out=lines.append)
    log = "\n".join([*lines, result.summary])

    assert result.ok, log
    assert result.allowed == 3 and result.limited == 4, log  # one product instance
    assert result.other_allowed == 3 and result.other_limited == 0, log
    assert result.summary == (
        "demo-ratelimit: allowed 3, limited 4 (RESOURCE_EXHAUSTED), other caller unaffected"
    )
    assert any("retry-after-ms=" in line for line in lines), log
    # The document from before the demo (none) is back.
    assert await etcd.get(GLOBAL) is None, log


async def test_the_demo_puts_back_the_document_it_found(
    system: RunningSystem, etcd: aetcd.Client
) -> None:
    before = {"log_level": "INFO", "rate_limits": {"default": {"rate_per_second": 50, "burst": 80}}}
    await etcd.put(GLOBAL, json.dumps(before).encode())
    lines: list[str] = []
    result = await run_demo(system.clients, etcd, out=lines.append)
    assert result.ok, "\n".join([*lines, result.summary])
    restored = await store.read(etcd, SCOPES, "global")
    assert restored.document == before
    # Both writes are in the history, by the demo.
    authors = [entry.author for entry in await store.history(etcd, SCOPES, "global")]
    assert authors[-2:] == ["demo-ratelimit", "demo-ratelimit"]

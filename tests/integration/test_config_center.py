"""The config center on the real etcd: propagation, refusal, compare-and-swap, whole swaps."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import aetcd
import pytest
import pytest_asyncio

from devstack.launcher import REPO_ROOT
from devstack.stack import Stack
from ops.config_admin import SCOPES, load_defaults, seed_defaults, wait_applied
from services.order.main import SERVICE as ORDER
from services.product.main import SERVICE as PRODUCT
from shared.config import store
from shared.config.center import ConfigCenter, RuntimeConfig, config_key
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.integration

SCOPES_TOUCHED = ("global", "product", "order")


@pytest_asyncio.fixture(loop_scope="session")
async def etcd(stack: Stack) -> AsyncIterator[aetcd.Client]:
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    await wipe(client)
    try:
        yield client
    finally:
        # The test stack's etcd outlives this module: leave no knob behind.
        await wipe(client)
        await client.close()


async def wipe(client: aetcd.Client) -> None:
    for scope in SCOPES_TOUCHED:
        await client.delete(config_key(scope).encode())
        await client.delete_prefix(f"{store.HISTORY_PREFIX}{scope}/".encode())


@pytest_asyncio.fixture(loop_scope="session")
async def products(
    stack: Stack, keys: TestKeys, etcd: aetcd.Client
) -> AsyncIterator[list[RunningService]]:
    await recreate_database(stack, "product")
    async with (
        run_service(PRODUCT, stack, keys) as first,
        run_service(PRODUCT, stack, keys) as second,
    ):
        yield [first, second]


def limits(i: int) -> dict[str, object]:
    """A document whose three numbers are all ``i``: a torn read would show two values."""
    return {
        "rate_limits": {"default": {"rate_per_second": i, "burst": i}},
        "breaker": {"failure_threshold": i},
    }


async def test_a_change_reaches_every_instance_within_a_second(
    products: list[RunningService], etcd: aetcd.Client
) -> None:
    revision = await store.write(
        etcd, SCOPES, "global", limits(7), expected_revision=0, author="test"
    )
    async with asyncio.timeout(1.0):
        while not all(p.host.config.current.revisions["global"] == revision for p in products):
            await asyncio.sleep(0.01)
    for p in products:
        assert p.host.config.current.rate_limits.default.burst == 7
    # And each says so in its status, under its lease.
    applied, _ = await wait_applied(etcd, "global", revision, timeout=10)
    ids = {p.host.settings.instance_id for p in products}
    assert ids <= {s.instance_id for s in applied}


async def test_an_invalid_document_is_refused_and_the_last_good_one_kept(
    products: list[RunningService], etcd: aetcd.Client
) -> None:
    good = await store.write(etcd, SCOPES, "global", limits(9), expected_revision=0, author="test")
    # Past the validation shopctl does: straight into etcd, as a careless script would.
    await etcd.put(config_key("global").encode(), b'{"breaker": {"failure_threshold": -1}}')
    refused_at = (await store.read(etcd, SCOPES, "global")).revision
    async with asyncio.timeout(5):
        while not all(p.host.config.refused.get("global") == refused_at for p in products):
            await asyncio.sleep(0.02)
    for p in products:
        current = p.host.config.current
        assert current.revisions["global"] == good
        assert current.breaker.failure_threshold == 9
    # The refusal is visible in the status too.
    statuses = {s.instance_id: s for s in await store.statuses(etcd)}
    for p in products:
        async with asyncio.timeout(10):
            while statuses[p.host.settings.instance_id].refused.get("global") != refused_at:
                await asyncio.sleep(0.1)
                statuses = {s.instance_id: s for s in await store.statuses(etcd)}
    # shopctl's own validation refuses it before writing.
    with pytest.raises(store.InvalidDocument, match="failure_threshold"):
        await store.write(
            etcd,
            SCOPES,
            "global",
            {"breaker": {"failure_threshold": -1}},
            expected_revision=refused_at,
            author="test",
        )
    with pytest.raises(store.InvalidDocument, match="Extra inputs"):
        await store.write(
            etcd, SCOPES, "global", {"breakr": {}}, expected_revision=refused_at, author="test"
        )


async def test_concurrent_sets_are_serialised_by_the_compare_and_swap(
    etcd: aetcd.Client,
) -> None:
    base = await store.write(etcd, SCOPES, "order", {}, expected_revision=0, author="test")
    writes = [
        store.write(
            etcd,
            SCOPES,
            "order",
            {"saga_timeout_seconds": 10 + i},
            expected_revision=base,
            author=f"admin{i}",
        )
        for i in range(5)
    ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    won = [r for r in results if isinstance(r, int)]
    lost = [r for r in results if isinstance(r, store.ConfigConflict)]
    assert len(won) == 1 and len(lost) == 4, results
    assert all(conflict.actual == won[0] for conflict in lost)
    assert "read it again" in str(lost[0])


async def test_a_reader_never_sees_a_mix_of_two_versions(
    products: list[RunningService], etcd: aetcd.Client
) -> None:
    center = products[0].host.config
    seen: set[int] = set()
    torn: list[RuntimeConfig] = []
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            current = center.current  # one read; everything below is that one version
            if current.revisions["global"] == 0:  # the defaults, before the first write
                await asyncio.sleep(0)
                continue
            values = {
                current.rate_limits.default.rate_per_second,
                current.rate_limits.default.burst,
                current.breaker.failure_threshold,
            }
            if len(values) != 1:
                torn.append(current)
            seen.update(int(v) for v in values)
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    revision = (await store.read(etcd, SCOPES, "global")).revision
    for i in range(1, 41):
        revision = await store.write(
            etcd, SCOPES, "global", limits(i), expected_revision=revision, author="test"
        )
        await asyncio.sleep(0.005)
    async with asyncio.timeout(5):
        while center.current.revisions["global"] != revision:
            await asyncio.sleep(0.01)
    done.set()
    await task
    assert torn == []
    assert len(seen) > 5  # it really read during the stream


async def test_history_and_rollback(etcd: aetcd.Client) -> None:
    first = await store.write(
        etcd,
        SCOPES,
        "product",
        {"faults": {"unavailable_rate": 0.1}},
        expected_revision=0,
        author="alice",
    )
    second = await store.write(
        etcd,
        SCOPES,
        "product",
        {"faults": {"unavailable_rate": 0.5}},
        expected_revision=first,
        author="bob",
    )
    entries = await store.history(etcd, SCOPES, "product")
    assert [e.author for e in entries] == ["alice", "bob"]
    assert entries[1].replaced_revision == first
    entry, third = await store.rollback(
        etcd, SCOPES, "product", to=None, expected_revision=second, author="carol"
    )
    assert entry == entries[0] and third > second
    assert (await store.read(etcd, SCOPES, "product")).document == {
        "faults": {"unavailable_rate": 0.1}
    }
    with pytest.raises(store.InvalidDocument, match="no history entry"):
        await store.rollback(
            etcd, SCOPES, "product", to="nope", expected_revision=third, author="x"
        )


async def test_a_knob_with_a_setting_follows_the_document_and_falls_back(
    stack: Stack, keys: TestKeys, etcd: aetcd.Client
) -> None:
    await recreate_database(stack, "order")
    async with run_service(ORDER, stack, keys, saga_timeout_seconds=1234) as order:
        center: ConfigCenter = order.host.config
        assert center.current.service.saga_timeout_seconds == 1234  # type: ignore[attr-defined]
        revision = await store.write(
            etcd, SCOPES, "order", {"saga_timeout_seconds": 55}, expected_revision=0, author="test"
        )
        async with asyncio.timeout(5):
            while center.current.revisions["order"] != revision:
                await asyncio.sleep(0.01)
        assert center.current.service.saga_timeout_seconds == 55  # type: ignore[attr-defined]
        await etcd.delete(config_key("order").encode())
        async with asyncio.timeout(5):
            while center.current.revisions["order"] != 0:
                await asyncio.sleep(0.01)
        # No document: the environment's value again.
        assert center.current.service.saga_timeout_seconds == 1234  # type: ignore[attr-defined]


async def test_the_defaults_are_seeded_once_and_never_over_a_set_document(
    etcd: aetcd.Client,
) -> None:
    documents = load_defaults()
    await store.write(
        etcd, SCOPES, "order", {"saga_timeout_seconds": 99}, expected_revision=0, author="admin"
    )
    outcome = await seed_defaults(etcd, documents)
    assert outcome["order"].startswith("kept")
    assert outcome["global"].startswith("written")
    assert (await store.read(etcd, SCOPES, "order")).document == {"saga_timeout_seconds": 99}
    again = await seed_defaults(etcd, documents)
    assert all(what.startswith("kept") for what in again.values())


async def test_shopctl_config_get_and_status(
    stack: Stack, etcd: aetcd.Client, products: list[RunningService]
) -> None:
    await store.write(etcd, SCOPES, "global", limits(3), expected_revision=0, author="test")

    async def shopctl(*args: str) -> subprocess.CompletedProcess[str]:
        # In a thread: the instances under test share this event loop, and a blocked loop
        # sends no lease keepalives (their 2 s leases, and the statuses on them, would expire).
        return await asyncio.to_thread(
            subprocess.run,
            [
                *(sys.executable, "-m", "ops.shopctl", "--tls-dir", str(stack.tls_dir)),
                *("config", *args, "--etcd", stack.etcd_endpoint),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    got = await shopctl("get", "global")
    assert got.returncode == 0, got.stderr
    assert '"failure_threshold": 3' in got.stdout
    status = await shopctl("status")
    assert status.returncode == 0, status.stderr
    for p in products:
        assert p.host.settings.instance_id in status.stdout
    unknown = await shopctl("get", "nosuch")
    assert unknown.returncode == 1 and "unknown scope 'nosuch'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


async def test_after_an_etcd_restart_the_instance_reads_again(
    stack: Stack, etcd: aetcd.Client
) -> None:
    center = ConfigCenter("product")
    watcher = etcd_client(stack.etcd_endpoint, tls=ClientTLS(stack.tls_dir, "product"))
    await center.start(watcher)
    try:
        await asyncio.to_thread(stack.stop, "etcd")
        await asyncio.to_thread(stack.start, "etcd")
        # A change after the restart: the broken watch lists again and applies it.
        revision = await store.write(
            etcd,
            SCOPES,
            "product",
            {"faults": {"unavailable_rate": 0.25}},
            expected_revision=0,
            author="test",
        )
        async with asyncio.timeout(15):
            while center.current.revisions["product"] != revision:
                await asyncio.sleep(0.05)
        assert center.current.faults.unavailable_rate == 0.25
    finally:
        await center.stop()
        await watcher.close()

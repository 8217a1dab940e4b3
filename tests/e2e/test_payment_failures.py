"""A payment provider that declines 30 % of charges: the saga compensates every one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from devstack.stack import Stack
from tests.e2e.conftest import RunningSystem, running_system
from tests.support.saga import (
    funded_buyers,
    new_product,
    place_one_each,
    settled_audit,
    wait_until_terminal,
)
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def flaky_payments(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningSystem]:
    env = {"SHOP_PAYMENT_PROVIDER_FAILURE_RATE": "0.3"}
    async with running_system(stack, keys, extra_env=env) as running:
        yield running


async def test_declined_payments_cancel_orders_and_release_their_stock(
    flaky_payments: RunningSystem,
) -> None:
    system = flaky_payments
    product_id, sku = await new_product(system.clients, system.keys, units=1_000)
    buyers = await funded_buyers(system.clients, system.keys, 200, funds_minor=5_000)
    orders = await place_one_each(buyers, [(product_id, 1)])
    counts = await wait_until_terminal(system.stack, orders)
    assert set(counts) == {"confirmed", "cancelled"}
    assert counts["confirmed"] + counts["cancelled"] == 200
    assert 30 <= counts["cancelled"] <= 90  # 30 % of 200, give or take chance
    conn = await asyncpg.connect(system.stack.pg_dsn("shop_inventory"))
    try:
        stock = await conn.fetchrow("SELECT * FROM stock WHERE sku = $1", sku)
    finally:
        await conn.close()
    assert stock is not None
    assert stock["sold"] == counts["confirmed"]
    assert stock["reserved"] == 0
    assert stock["available"] == 1_000 - counts["confirmed"]
    report = await settled_audit(system.stack)
    assert report.ok, report.render()

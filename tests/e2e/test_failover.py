"""Kill a product instance mid-traffic: etcd forgets it within TTL + 1 s and no call fails."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ops.seed import CUSTOMER
from ops.shop_client import ShopClient
from shop.order.v1 import order_pb2
from tests.e2e.conftest import E2E_TTL, RunningSystem

pytestmark = pytest.mark.e2e


async def test_demo_customer_places_an_order(system: RunningSystem) -> None:
    customer = ShopClient(system.clients)
    await customer.login(*CUSTOMER)
    order = await customer.place_order([(system.products["DEMO-TSHIRT"], 2)], str(uuid.uuid4()))
    assert order.status == order_pb2.ORDER_STATUS_PENDING
    assert order.total.amount_minor == 2 * 1_999
    assert (await customer.get_order(order.order_id)).order_id == order.order_id


async def test_sigkilled_instance_leaves_etcd_within_ttl_and_calls_keep_succeeding(
    system: RunningSystem,
) -> None:
    customer = ShopClient(system.clients)
    await customer.login(*CUSTOMER)
    products = [p for p in system.launcher.processes if p.service == "product"]
    assert len(products) == 2
    assert len(system.directory.instances("product")) == 2
    victim = products[0]
    sku_id = system.products["DEMO-MUG"]

    failures: list[BaseException] = []
    successes = 0
    stop = asyncio.Event()

    async def traffic() -> None:
        nonlocal successes
        while not stop.is_set():
            try:
                await customer.get_product(sku_id)  # straight to product, via our discovery
                await customer.place_order([(sku_id, 1)], str(uuid.uuid4()))  # via order's
                successes += 1
            except Exception as error:  # every failure counts, whatever its kind
                failures.append(error)
            await asyncio.sleep(0.02)

    drivers = [asyncio.create_task(traffic()) for _ in range(4)]
    await asyncio.sleep(1.0)
    loop = asyncio.get_running_loop()
    victim.process.kill()
    killed_at = loop.time()
    async with asyncio.timeout(E2E_TTL + 1):
        await system.directory.wait_until(
            lambda: (
                victim.instance_id
                not in {i.instance_id for i in system.directory.instances("product")}
            )
        )
    gone_after = loop.time() - killed_at
    await asyncio.sleep(1.0)  # keep calling on the survivor alone
    stop.set()
    await asyncio.gather(*drivers)

    assert gone_after <= E2E_TTL + 1
    assert failures == [], f"{len(failures)} calls failed, first: {failures[0]!r}"
    assert successes > 20
    assert [i.instance_id for i in system.directory.instances("product")] == [
        p.instance_id for p in products[1:]
    ]

"""Order's degraded mode end to end: product stopped, an order priced from the last known
price goes through the whole saga (inventory, payment) to CONFIRMED, and the audit is clean:
it was charged exactly the total it shows."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import aetcd
import pytest

from devstack.stack import Stack
from shared.config.center import config_key, status_key
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS
from shop.order.v1 import order_pb2
from tests.e2e.conftest import running_system
from tests.support.saga import funded_buyers, new_product, settled_audit, wait_until_terminal
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e

PRICE = 1_500


async def wait_applied(client: aetcd.Client, instance_id: str, revision: int) -> None:
    """Until the order instance reports (its /config-status/ key) it applied ``revision``."""
    key = status_key("order", instance_id).encode()
    async with asyncio.timeout(20):
        while True:
            found = await client.get(key)
            if found is not None and json.loads(found.value)["revisions"]["order"] >= revision:
                return
            await asyncio.sleep(0.1)


async def test_a_degraded_order_is_confirmed_and_charged_its_total(
    stack: Stack, keys: TestKeys
) -> None:
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    try:
        async with running_system(stack, keys) as system:
            product_id, _ = await new_product(
                system.clients, system.keys, units=10, price_minor=PRICE
            )
            [buyer] = await funded_buyers(system.clients, system.keys, 1, funds_minor=10_000)
            # Priced live: the order service now knows this product's price.
            live = await buyer.place_order([(product_id, 1)], str(uuid.uuid4()))
            assert not live.priced_from_cache

            document = {"degradation": {"enabled": True, "max_staleness_seconds": 300}}
            reply = await client.put(config_key("order").encode(), json.dumps(document).encode())
            [order] = [p for p in system.launcher.processes if p.service == "order"]
            await wait_applied(client, order.instance_id, reply.header.revision)

            for product in [p for p in system.launcher.processes if p.service == "product"]:
                product.process.send_signal(signal.SIGTERM)  # revokes its lease, then stops
                await product.process.wait()
            async with asyncio.timeout(10):
                await system.directory.wait_until(lambda: not system.directory.instances("product"))

            degraded = await buyer.place_order([(product_id, 2)], str(uuid.uuid4()))
            assert degraded.priced_from_cache
            assert degraded.total.amount_minor == 2 * PRICE

            counts = await wait_until_terminal(stack, [live.order_id, degraded.order_id])
            assert counts == {"confirmed": 2}
            confirmed = await buyer.get_order(degraded.order_id)
            assert confirmed.status == order_pb2.ORDER_STATUS_CONFIRMED
            assert confirmed.priced_from_cache
            report = await settled_audit(stack)
            assert report.ok, report.render()
            assert report.info["priced_from_cache"] == 1
            [charges] = [c for c in report.checks if c.name == "charge_matches_total"]
            assert charges.checked == 2
    finally:
        # etcd outlives this test: the next system must start with the defaults.
        await client.delete(config_key("order").encode())
        await client.close()

"""A real browser (Debian's chromium, driven by Playwright) through the storefront.

The journey a person takes: sign in at the authorization server, browse, add to the
cart, check out, watch the order become CONFIRMED without reloading, find it in the
history, sign out. Then a rejected order (out of stock) and the product page while
inventory is down. Screenshots go to reports/storefront-*.png.
"""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from deploy.tooling import browser_journey
from devstack.stack import Stack
from ops.seed import CUSTOMER
from ops.shop_client import ShopClient
from shared.auth.identity import Role
from shop.order.v1 import order_pb2
from tests.e2e.conftest import RunningSystem, running_system
from tests.support.saga import new_product
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e

REPORTS = Path(__file__).resolve().parents[2] / "reports"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningSystem]:
    async with running_system(stack, keys, gateway=True) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(**browser_journey.launch_options())
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    opened = await context.new_page()
    yield opened
    await context.close()


async def shot(page: Page, name: str) -> None:
    await browser_journey.shot(page, REPORTS, f"storefront-{name}")


async def buy(page: Page, base: str, product_id: str, quantity: int = 1) -> str:
    """From the product page to a placed order; the order page's URL."""
    await page.goto(f"{base}/products/{product_id}")
    await page.fill("#quantity", str(quantity))
    await page.get_by_role("button", name="Add to cart").click()
    await expect(page).to_have_url(re.compile(r"/cart$"))
    await page.click("#checkout")
    await page.get_by_role("button", name="Place order").click()
    await expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    return page.url


async def test_a_person_signs_in_buys_and_watches_the_order_confirm_live(
    system: RunningSystem, browser: Browser
) -> None:
    order_id = await browser_journey.journey(
        browser, system.gateway_url, *CUSTOMER, REPORTS, prefix="storefront-"
    )
    admin = ShopClient(system.clients, token=system.keys.token(Role.ADMIN))
    order = await admin.get_order(order_id)
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED


async def test_an_order_beyond_the_stock_is_rejected_and_says_why(
    system: RunningSystem, page: Page
) -> None:
    base = system.gateway_url
    product_id, sku = await new_product(system.clients, system.keys, units=1, prefix="RARE")
    await browser_journey.sign_in(page, base, *CUSTOMER)
    await buy(page, base, product_id, quantity=2)
    await expect(page.locator("#status")).to_have_text("Rejected", timeout=browser_journey.SAGA_MS)
    await expect(page.locator("#status-reason")).to_contain_text("out of stock")
    await expect(page.locator("#status-reason")).to_contain_text(sku)
    await shot(page, "6-order-rejected")


async def test_a_product_page_renders_with_the_stock_unknown_while_inventory_is_down(
    system: RunningSystem, page: Page
) -> None:
    base = system.gateway_url
    product_id = system.products["DEMO-HOODIE"]
    inventory = [p for p in system.launcher.processes if p.service == "inventory"]
    for instance in inventory:
        instance.process.send_signal(signal.SIGTERM)
    for instance in inventory:
        await instance.process.wait()
    response = await page.goto(f"{base}/products/{product_id}")
    assert response is not None and response.status == 200
    await expect(page.locator("h1")).to_have_text("Outbox hoodie")
    await expect(page.locator("#stock")).to_contain_text("Stock unknown")
    content = await page.content()
    assert "Traceback" not in content and "Exception" not in content
    await shot(page, "7-inventory-down")

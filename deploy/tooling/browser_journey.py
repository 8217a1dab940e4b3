"""The storefront's journey in a real browser: Debian's chromium driven by Playwright.

The same journey runs in `make test` (tests/browser/, against the local system) and in
`make k8s-real-check` (against the cluster, through `make up`'s port-forward): sign in
at the authorization server, search, open a product, add it to the cart, check out,
watch the order turn CONFIRMED without a reload, find it in the history, sign out.
Screenshots of each page are written where the caller says.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright, expect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# Playwright's timeouts are in milliseconds; the saga is given a minute on a busy machine.
SAGA_MS = 60_000


def executable() -> str:
    """Debian's chromium: `playwright install` needs a host this machine cannot reach."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "no chromium on PATH: `make browser-tools` installs Debian's (apt-get install chromium)"
    )


def launch_options() -> dict[str, Any]:
    # Chromium's own sandbox needs a user namespace that root in a container lacks.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return {"executable_path": executable(), "args": args, "headless": True}


async def shot(page: Page, directory: Path, name: str) -> None:
    # Playwright makes the directory if it is missing.
    await page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


async def sign_in(page: Page, base: str, email: str, password: str) -> None:
    """From the catalog through the authorization server's sign-in page and back."""
    await page.goto(base + "/")
    await page.click("#login")
    await expect(page.locator("#email")).to_be_visible()
    await page.fill("#email", email)
    await page.fill("#password", password)
    await page.get_by_role("button", name="Sign in").click()
    allow = page.get_by_role("button", name="Allow")
    if await allow.count():
        await allow.click()
    await expect(page.locator("#signed-in-as")).to_have_text(email)


async def journey(
    browser: Browser, base: str, email: str, password: str, screenshots: Path, prefix: str
) -> str:
    """The whole journey in a fresh browser context; the id of the order it confirmed."""
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    try:
        await page.goto(base + "/")
        await expect(page.locator("#products")).to_contain_text("Saga mug")
        await shot(page, screenshots, f"{prefix}1-catalog")

        await sign_in(page, base, email, password)
        await page.fill("#search", "mug")
        await page.get_by_role("button", name="Search").click()
        await expect(page.locator("#products .product")).to_have_count(1)
        await page.get_by_role("link", name="Saga mug").click()
        await expect(page.locator("#stock")).to_contain_text("In stock")
        await shot(page, screenshots, f"{prefix}2-product")

        await page.get_by_role("button", name="Add to cart").click()
        await expect(page.locator("#cart")).to_contain_text("Saga mug")
        await shot(page, screenshots, f"{prefix}3-cart")
        await page.click("#checkout")
        await page.get_by_role("button", name="Place order").click()
        await expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
        order_id = page.url.rsplit("/", 1)[1]

        # A mark in this document: a reload would lose it, so the status came live.
        await page.evaluate("window.stillTheSamePage = true")
        await expect(page.locator("#status")).to_have_text("Confirmed", timeout=SAGA_MS)
        if not await page.evaluate("window.stillTheSamePage === true"):
            raise AssertionError("the order page was reloaded: the status did not come live")
        await expect(page.locator("ol.steps li.done")).to_have_count(4)
        await shot(page, screenshots, f"{prefix}4-order-confirmed")

        await page.goto(base + "/orders")
        await expect(page.locator("#orders")).to_contain_text(order_id[:8])
        await shot(page, screenshots, f"{prefix}5-order-history")

        await page.click("#logout")
        await expect(page.locator("#login")).to_be_visible()
        await page.goto(base + "/orders")  # signed out everywhere: the password again
        await expect(page.locator("#email")).to_be_visible()
        return order_id
    finally:
        await context.close()


async def run_journey(base: str, email: str, password: str, screenshots: Path, prefix: str) -> str:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options())
        try:
            return await journey(browser, base, email, password, screenshots, prefix)
        finally:
            await browser.close()

"""The shop's pages: catalog, product, cart, checkout, orders, wallet.

Each page calls the services through the gateway's backends with the visitor's own
token (an anonymous visitor's catalog calls use the gateway's client-credentials
token), and a failure becomes a friendly page (render.problem_page), never a trace.
The product page is composed: it renders when inventory is down, with the stock shown
as unknown.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from gateway.carts import MAX_QUANTITY, CartLine
from gateway.storefront import views
from gateway.storefront.render import CURRENCY, message_page, page, problem_page
from gateway.storefront.web_session import Visit, checked_form, shopper, visit
from shop.common.v1 import money_pb2

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
VisitDep = Annotated[Visit, Depends(visit)]
ShopperDep = Annotated[Visit, Depends(shopper)]
PAGE_SIZE = 12
TokenQuery = Annotated[str, Query(max_length=512)]


async def _public_auth(current: Visit) -> tuple[tuple[str, str], ...]:
    return await current.gateway.credentials(current.caller)


@router.get("/")
async def catalog(
    request: Request,
    current: VisitDep,
    q: Annotated[str, Query(max_length=100)] = "",
    page_token: TokenQuery = "",
) -> Response:
    try:
        auth = await _public_auth(current)
        reply = await current.gateway.backends.list_products(
            auth, PAGE_SIZE, page_token, 0, query=q
        )
    except Exception as failure:
        return problem_page(request, failure)
    context = {
        "products": [views.product_view(p) for p in reply.products],
        "q": q,
        "page_token": page_token,
        "next_page_token": reply.next_page_token,
    }
    return page(request, "catalog.html", context)


async def stock_of(current: Visit, auth: Any, sku: str) -> dict[str, Any]:
    """The stock, or "unknown" when inventory cannot say in time: the page renders."""
    gateway = current.gateway
    try:
        stock = await gateway.backends.get_stock(
            auth, sku, timeout=gateway.settings.stock_timeout_seconds
        )
    except Exception:
        log.info("stock of %s unknown", sku, exc_info=True)
        return {"status": "unknown", "available": None}
    status = "in_stock" if stock.available > 0 else "out_of_stock"
    return {"status": status, "available": stock.available}


@router.get("/products/{product_id}")
async def product_page(request: Request, current: VisitDep, product_id: str) -> Response:
    try:
        auth = await _public_auth(current)
        product = await current.gateway.backends.get_product(auth, product_id)
    except Exception as failure:
        return problem_page(request, failure)
    stock = await stock_of(current, auth, product.sku)
    return page(request, "product.html", {"product": views.product_view(product), "stock": stock})


def _quantity(raw: Any, low: int) -> int | None:
    try:
        value = int(str(raw))
    except ValueError:
        return None
    return value if low <= value <= MAX_QUANTITY else None


@router.post("/cart/items")
async def add_to_cart(request: Request, current: ShopperDep) -> Response:
    form = await checked_form(request, current)
    quantity = _quantity(form.get("quantity"), 1)
    if quantity is None:
        return message_page(request, 400, "That did not work", f"Choose 1 to {MAX_QUANTITY}.")
    try:
        product = await current.gateway.backends.get_product(
            current.auth, str(form.get("product_id", ""))
        )
        assert current.caller is not None
        user_id = current.caller.identity.user_id
        existing = {line.sku: line for line in await current.gateway.carts.lines(user_id)}
        held = existing[product.sku].quantity if product.sku in existing else 0
        total = min(held + quantity, MAX_QUANTITY)
        await current.gateway.carts.put(user_id, CartLine(product.sku, product.product_id, total))
    except Exception as failure:
        return problem_page(request, failure)
    return RedirectResponse("/cart", status_code=303)


@router.post("/cart/items/{sku}")
async def set_quantity(request: Request, current: ShopperDep, sku: str) -> Response:
    form = await checked_form(request, current)
    quantity = _quantity(form.get("quantity"), 0)
    if quantity is None:
        return message_page(request, 400, "That did not work", f"Choose 0 to {MAX_QUANTITY}.")
    assert current.caller is not None
    user_id = current.caller.identity.user_id
    try:
        lines = {line.sku: line for line in await current.gateway.carts.lines(user_id)}
        if sku in lines and quantity == 0:
            await current.gateway.carts.remove(user_id, sku)
        elif sku in lines:
            await current.gateway.carts.put(user_id, CartLine(sku, lines[sku].product_id, quantity))
    except Exception as failure:
        return problem_page(request, failure)
    return RedirectResponse("/cart", status_code=303)


@router.post("/cart/items/{sku}/remove")
async def remove_from_cart(request: Request, current: ShopperDep, sku: str) -> Response:
    await checked_form(request, current)
    assert current.caller is not None
    try:
        await current.gateway.carts.remove(current.caller.identity.user_id, sku)
    except Exception as failure:
        return problem_page(request, failure)
    return RedirectResponse("/cart", status_code=303)


async def _cart_lines(current: Visit) -> tuple[list[dict[str, Any]], str]:
    """The cart's lines with today's titles and prices, and their total."""
    assert current.caller is not None
    lines = await current.gateway.carts.lines(current.caller.identity.user_id)
    products = await asyncio.gather(
        *(current.gateway.backends.get_product(current.auth, line.product_id) for line in lines)
    )
    views_, total = [], 0
    for line, product in zip(lines, products, strict=True):
        line_total = product.price.amount_minor * line.quantity
        total += line_total
        views_.append(
            {
                "product_id": line.product_id,
                "sku": line.sku,
                "title": product.title,
                "quantity": line.quantity,
                "unit_price": views.money(product.price),
                "total": views.money(
                    money_pb2.Money(amount_minor=line_total, currency=product.price.currency)
                ),
            }
        )
    currency = products[0].price.currency if products else CURRENCY
    return views_, views.money(money_pb2.Money(amount_minor=total, currency=currency))


@router.get("/cart")
async def cart(request: Request, current: ShopperDep) -> Response:
    try:
        lines, total = await _cart_lines(current)
    except Exception as failure:
        return problem_page(request, failure)
    return page(request, "cart.html", {"lines": lines, "total": total})


@router.get("/checkout")
async def checkout(request: Request, current: ShopperDep) -> Response:
    try:
        lines, total = await _cart_lines(current)
        wallet = await current.gateway.backends.get_balance(current.auth)
    except Exception as failure:
        return problem_page(request, failure)
    if not lines:
        return RedirectResponse("/cart", status_code=303)
    context = {
        "lines": lines,
        "total": total,
        "balance": views.money(wallet.balance),
        "idempotency_key": str(uuid.uuid4()),
    }
    return page(request, "checkout.html", context)


@router.post("/checkout")
async def place_order(request: Request, current: ShopperDep) -> Response:
    form = await checked_form(request, current)
    key = str(form.get("idempotency_key", ""))
    if not 1 <= len(key) <= 64:
        return message_page(request, 400, "That did not work", "Please open the checkout again.")
    assert current.caller is not None
    user_id = current.caller.identity.user_id
    try:
        lines = await current.gateway.carts.lines(user_id)
        if not lines:
            return RedirectResponse("/cart", status_code=303)
        items = [(line.product_id, line.quantity) for line in lines]
        order = await current.gateway.backends.place_order(current.auth, items, key)
        await current.gateway.carts.clear(user_id)
    except Exception as failure:
        return problem_page(request, failure)
    return RedirectResponse(f"/orders/{order.order_id}", status_code=303)


@router.get("/orders")
async def orders(request: Request, current: ShopperDep, page_token: TokenQuery = "") -> Response:
    try:
        reply = await current.gateway.backends.list_orders(current.auth, 20, page_token)
    except Exception as failure:
        return problem_page(request, failure)
    context = {
        "orders": [views.order_view(o) for o in reply.orders],
        "page_token": page_token,
        "next_page_token": reply.next_page_token,
    }
    return page(request, "orders.html", context)


@router.get("/orders/{order_id}")
async def order_page(request: Request, current: ShopperDep, order_id: str) -> Response:
    try:
        order = await current.gateway.backends.get_order(current.auth, order_id)
    except Exception as failure:
        return problem_page(request, failure)
    return page(request, "order.html", {"order": views.order_view(order)})


@router.post("/orders/{order_id}/cancel")
async def cancel_order(request: Request, current: ShopperDep, order_id: str) -> Response:
    await checked_form(request, current)
    try:
        await current.gateway.backends.cancel_order(current.auth, order_id)
    except Exception as failure:
        return problem_page(request, failure)
    return RedirectResponse(f"/orders/{order_id}", status_code=303)


@router.get("/wallet")
async def wallet(request: Request, current: ShopperDep) -> Response:
    try:
        reply = await current.gateway.backends.get_balance(current.auth)
    except Exception as failure:
        return problem_page(request, failure)
    context = {
        "balance": views.money(reply.balance),
        "currency": reply.balance.currency or CURRENCY,
        "idempotency_key": str(uuid.uuid4()),
    }
    return page(request, "wallet.html", context)


@router.post("/wallet/top-ups")
async def top_up(request: Request, current: ShopperDep) -> Response:
    form = await checked_form(request, current)
    amount = views.parse_amount(str(form.get("amount", "")))
    key = str(form.get("idempotency_key", ""))
    if amount is None or not 1 <= len(key) <= 64:
        return message_page(
            request, 400, "That did not work", "Enter an amount such as 25 or 12.50."
        )
    try:
        current_wallet = await current.gateway.backends.get_balance(current.auth)
        currency = current_wallet.balance.currency or CURRENCY
        money = money_pb2.Money(amount_minor=amount, currency=currency)
        await current.gateway.backends.top_up(current.auth, money, key)
    except Exception as failure:
        return problem_page(request, failure)
    return RedirectResponse("/wallet", status_code=303)

"""The admin page: the catalog and its stock, for a person whose token carries the
admin scopes. The page checks them to show itself; the product and inventory services
check them again on every change (with the gateway's certificate as the calling party).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from gateway.storefront import views
from gateway.storefront.pages import TokenQuery, stock_of
from gateway.storefront.render import CURRENCY, message_page, page, problem_page
from gateway.storefront.web_session import Visit, checked_form, shopper
from shared.auth.scopes import CATALOG_ADMIN, STOCK_ADMIN
from shop.common.v1 import money_pb2
from shop.product.v1 import product_pb2

router = APIRouter(include_in_schema=False)
ShopperDep = Annotated[Visit, Depends(shopper)]
PAGE_SIZE = 50


def _admin(current: Visit) -> bool:
    caller = current.caller
    return (
        caller is not None
        and caller.identity.is_admin
        and {CATALOG_ADMIN, STOCK_ADMIN} <= caller.identity.scopes
    )


def _refused(request: Request) -> Response:
    return message_page(
        request, 403, "Not allowed", "This page is for administrators with the catalog scopes."
    )


@router.get("/admin")
async def admin(request: Request, current: ShopperDep, page_token: TokenQuery = "") -> Response:
    if not _admin(current):
        return _refused(request)
    try:
        reply = await current.gateway.backends.list_products(current.auth, PAGE_SIZE, page_token, 0)
    except Exception as failure:
        return problem_page(request, failure)
    stocks = await asyncio.gather(*(stock_of(current, current.auth, p.sku) for p in reply.products))
    products = [
        {**views.product_view(p), "available": stock["available"]}
        for p, stock in zip(reply.products, stocks, strict=True)
    ]
    context = {
        "products": products,
        "currency": CURRENCY,
        "next_page_token": reply.next_page_token,
    }
    return page(request, "admin.html", context)


@router.post("/admin/products")
async def create_product(request: Request, current: ShopperDep) -> Response:
    if not _admin(current):
        return _refused(request)
    form = await checked_form(request, current)
    price = views.parse_amount(str(form.get("price", "")))
    if price is None:
        return message_page(request, 400, "That did not work", "Enter a price such as 19.99.")
    product = product_pb2.CreateProductRequest(
        sku=str(form.get("sku", "")).strip().upper(),
        title=str(form.get("title", "")),
        description=str(form.get("description", "")),
        price=money_pb2.Money(amount_minor=price, currency=CURRENCY),
    )
    try:
        await current.gateway.backends.create_product(current.auth, product)
    except Exception as failure:
        return problem_page(request, failure)
    return RedirectResponse("/admin", status_code=303)


@router.post("/admin/stock/{sku}")
async def set_stock(request: Request, current: ShopperDep, sku: str) -> Response:
    if not _admin(current):
        return _refused(request)
    form = await checked_form(request, current)
    try:
        available = int(str(form.get("available", "")))
    except ValueError:
        return message_page(request, 400, "That did not work", "Enter a whole number of units.")
    try:
        await current.gateway.backends.set_stock(current.auth, sku, available)
    except Exception as failure:
        return problem_page(request, failure)
    return RedirectResponse("/admin", status_code=303)

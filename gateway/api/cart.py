"""The signed-in user's cart: the gateway's own state, checked against the catalog.

A line is added only for a product on sale whose SKU it names, so an order placed
from the cart (``POST /orders`` with ``{"from_cart": true}``) prices what the user saw.
Reading the cart shows each line's product as the catalog has it now, or ``null``
for a line whose product the catalog could not give.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from gateway.api.common import errors
from gateway.api.models import (
    PRODUCT_STATUS,
    SKU_PATTERN,
    Cart,
    CartIn,
    CartLineView,
    CartQuantityIn,
    Product,
)
from gateway.auth import Caller, scoped
from gateway.backends import Auth
from gateway.carts import CartLine
from gateway.problems import NOT_ROUTED, VALIDATION, Problem, as_problem
from gateway.state import Gateway, GatewayDep
from shared.auth.scopes import ORDERS_READ, ORDERS_WRITE

router = APIRouter(tags=["cart"])
Reader = Annotated[Caller, Depends(scoped(ORDERS_READ))]
Writer = Annotated[Caller, Depends(scoped(ORDERS_WRITE))]
Sku = Annotated[str, Path(pattern=SKU_PATTERN, description="The product's SKU")]


def invalid(field: str, detail: str) -> Problem:
    return Problem(VALIDATION, detail, errors=[{"field": field, "detail": detail}])


async def checked(gateway: Gateway, auth: Auth, line: CartLine, field: str) -> CartLine:
    """The line, if its product exists, is on sale and has its SKU; else a 422."""
    try:
        product = await gateway.backends.get_product(auth, line.product_id)
    except Exception as error:
        problem = as_problem(error)
        if problem is not None and problem.status == 404:
            raise invalid(f"{field}.product_id", "no such product") from None
        raise
    if product.sku != line.sku:
        raise invalid(f"{field}.sku", f"product {line.product_id} has another SKU")
    if PRODUCT_STATUS.get(product.status) != "active":
        raise invalid(f"{field}.product_id", "this product is not for sale")
    return line


async def view(gateway: Gateway, caller: Caller) -> Cart:
    lines = await gateway.carts.lines(caller.identity.user_id)

    async def product_of(line: CartLine) -> Product | None:
        try:
            return Product.of(await gateway.backends.get_product(caller.metadata, line.product_id))
        except Exception as error:
            if as_problem(error) is None:
                raise
            return None

    products = await asyncio.gather(*(product_of(line) for line in lines))
    return Cart(
        items=[
            CartLineView(
                sku=line.sku, product_id=line.product_id, quantity=line.quantity, product=product
            )
            for line, product in zip(lines, products, strict=True)
        ]
    )


@router.get("/cart", summary="The cart", response_model=Cart, responses=errors(401, 403))
async def get_cart(gateway: GatewayDep, caller: Reader) -> Cart:
    """Scope `orders:read`. Each line with its product as the catalog has it now."""
    return await view(gateway, caller)


@router.put(
    "/cart",
    summary="Replace the cart",
    response_model=Cart,
    responses=errors(401, 403, 422, 503, 504),
)
async def put_cart(body: CartIn, gateway: GatewayDep, caller: Writer) -> Cart:
    """Scope `orders:write`. The whole cart at once; each line is checked against the
    catalog (a product on sale, with that SKU)."""
    skus = [item.sku for item in body.items]
    if len(set(skus)) != len(skus):
        raise invalid("items", "each SKU at most once")
    lines = [CartLine(i.sku, i.product_id, i.quantity) for i in body.items]
    await asyncio.gather(
        *(checked(gateway, caller.metadata, line, f"items[{n}]") for n, line in enumerate(lines))
    )
    await gateway.carts.replace(caller.identity.user_id, lines)
    return await view(gateway, caller)


@router.delete("/cart", summary="Empty the cart", status_code=204, responses=errors(401, 403))
async def clear_cart(gateway: GatewayDep, caller: Writer) -> Response:
    """Scope `orders:write`."""
    await gateway.carts.clear(caller.identity.user_id)
    return Response(status_code=204)


@router.put(
    "/cart/items/{sku}",
    summary="Put a product in the cart, or set its quantity",
    response_model=Cart,
    responses=errors(401, 403, 422, 503, 504),
)
async def put_item(sku: Sku, body: CartQuantityIn, gateway: GatewayDep, caller: Writer) -> Cart:
    """Scope `orders:write`. Sets the line of `sku` to `quantity` (1..100)."""
    line = CartLine(sku, body.product_id, body.quantity)
    await checked(gateway, caller.metadata, line, "body")
    await gateway.carts.put(caller.identity.user_id, line)
    return await view(gateway, caller)


@router.delete(
    "/cart/items/{sku}",
    summary="Take a product out of the cart",
    status_code=204,
    responses=errors(401, 403, 404, 422),
)
async def delete_item(sku: Sku, gateway: GatewayDep, caller: Writer) -> Response:
    """Scope `orders:write`. A 404 problem if the cart has no line of `sku`."""
    if not await gateway.carts.remove(caller.identity.user_id, sku):
        raise Problem(NOT_ROUTED, f"the cart has no line of {sku}")
    return Response(status_code=204)

"""Orders: place (from items or from the cart), list, read, cancel.

Every POST needs an ``Idempotency-Key`` (gateway/idempotency.py): a retry with the same
key and body gets the first answer, so a checkout clicked twice is one order. The key
is also the order's own idempotency key at the order service.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from gateway.api.common import PREFIX, IdempotencyKey, PageSize, PageToken, errors, link_next
from gateway.api.models import Order, OrderPage, PlaceOrderIn
from gateway.auth import Caller, scoped
from gateway.idempotency import Answer, checked_key, run_once
from gateway.problems import VALIDATION, Problem
from gateway.state import GatewayDep
from shared.auth.scopes import ORDERS_READ, ORDERS_WRITE

router = APIRouter(tags=["orders"])
Reader = Annotated[Caller, Depends(scoped(ORDERS_READ))]
Writer = Annotated[Caller, Depends(scoped(ORDERS_WRITE))]


@router.post(
    "/orders",
    summary="Place an order",
    status_code=201,
    response_model=Order,
    responses=errors(400, 401, 403, 409, 422, 503, 504),
)
async def place_order(
    request: Request,
    body: PlaceOrderIn,
    gateway: GatewayDep,
    caller: Writer,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Scope `orders:write`. The order is `pending` until the saga settles it; follow
    `GET /orders/{order_id}/events`. With `{"from_cart": true}` the cart's lines are
    ordered and the cart emptied."""
    key = checked_key(idempotency_key)
    user = caller.identity.user_id

    async def handler() -> Answer:
        if body.items is not None:
            items = [(line.product_id, line.quantity) for line in body.items]
        else:
            items = [(line.product_id, line.quantity) for line in await gateway.carts.lines(user)]
            if not items:
                raise Problem(
                    VALIDATION,
                    "the cart is empty",
                    errors=[{"field": "from_cart", "detail": "the cart is empty"}],
                )
        order = await gateway.backends.place_order(caller.metadata, items, key)
        if body.from_cart:
            await gateway.carts.clear(user)
        location = f"{PREFIX}/orders/{order.order_id}"
        return 201, Order.of(order).model_dump(mode="json"), {"Location": location}

    return await run_once(
        gateway.idempotency, request, str(user), key, body.model_dump(mode="json"), handler
    )


@router.get(
    "/orders",
    summary="The caller's orders, newest first",
    response_model=OrderPage,
    responses=errors(401, 403, 422, 503, 504),
)
async def list_orders(
    request: Request,
    response: Response,
    gateway: GatewayDep,
    caller: Reader,
    page_size: PageSize = 20,
    page_token: PageToken = "",
) -> OrderPage:
    """Scope `orders:read`. Follow `next_page_token` (or the `Link` header)."""
    reply = await gateway.backends.list_orders(caller.metadata, page_size, page_token)
    return OrderPage(
        orders=[Order.of(o) for o in reply.orders],
        next_page_token=link_next(request, response, reply.next_page_token),
    )


@router.get(
    "/orders/{order_id}",
    summary="One of the caller's orders",
    response_model=Order,
    responses=errors(401, 403, 404, 422, 503, 504),
)
async def get_order(order_id: str, gateway: GatewayDep, caller: Reader) -> Order:
    """Scope `orders:read`. Another user's order is not found."""
    return Order.of(await gateway.backends.get_order(caller.metadata, order_id))


@router.post(
    "/orders/{order_id}/cancel",
    summary="Cancel a pending order",
    response_model=Order,
    responses=errors(400, 401, 403, 404, 409, 422, 503, 504),
)
async def cancel_order(
    request: Request,
    order_id: str,
    gateway: GatewayDep,
    caller: Writer,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Scope `orders:write`. The saga then releases the stock and refunds any charge; a
    confirmed or rejected order cannot be cancelled (409)."""
    key = checked_key(idempotency_key)

    async def handler() -> Answer:
        order = await gateway.backends.cancel_order(caller.metadata, order_id)
        return 200, Order.of(order).model_dump(mode="json"), {}

    user = str(caller.identity.user_id)
    return await run_once(gateway.idempotency, request, user, key, {}, handler)

"""The catalog, public: product pages (with ``q``) and a product with its stock.

``GET /products/{id}`` composes two services: the product from the catalog, then its
stock from inventory. Inventory is an extra, not a dependency: when it fails (down,
its breaker open, slower than ``stock_timeout_seconds``) the page is still a 200, with
``"stock": {"status": "unknown"}`` (a shop whose product pages die with its
inventory service is Online Boutique's issue 149).
"""

from __future__ import annotations

import logging
from typing import Annotated

import grpc
from fastapi import APIRouter, Depends, Query, Request, Response

from gateway.api.common import PageSize, PageToken, errors, link_next
from gateway.api.models import PRODUCT_STATUS, Product, ProductDetail, ProductPage, StockView
from gateway.auth import Caller, optional_caller
from gateway.backends import Auth
from gateway.problems import as_problem, from_domain_error
from gateway.state import GatewayDep
from shared.auth.scopes import CATALOG_ADMIN
from shared.errors import NotFound
from shop.product.v1 import product_pb2

log = logging.getLogger(__name__)
router = APIRouter(tags=["catalog"])

ACTIVE = product_pb2.PRODUCT_STATUS_ACTIVE


@router.get(
    "/products",
    summary="List the products on sale",
    response_model=ProductPage,
    responses=errors(401, 422, 503, 504),
)
async def list_products(
    request: Request,
    response: Response,
    gateway: GatewayDep,
    caller: Annotated[Caller | None, Depends(optional_caller)],
    page_size: PageSize = 20,
    page_token: PageToken = "",
    q: Annotated[
        str,
        Query(max_length=100, description="Words that each appear in the title or SKU"),
    ] = "",
) -> ProductPage:
    """Active products, a page at a time; follow `next_page_token` (or the `Link` header).
    With `q`, only those whose title or SKU holds every word of it (case-insensitive)."""
    auth = await gateway.credentials(caller)
    reply = await gateway.backends.list_products(auth, page_size, page_token, ACTIVE, query=q)
    products, next_token = list(reply.products), reply.next_page_token
    return ProductPage(
        products=[Product.of(p) for p in products],
        next_page_token=link_next(request, response, next_token),
    )


async def stock_of(gateway: GatewayDep, auth: Auth, sku: str) -> StockView:
    """The stock, or ``unknown`` when inventory fails: never the page's failure."""
    try:
        stock = await gateway.backends.get_stock(
            auth, sku, timeout=gateway.settings.stock_timeout_seconds
        )
    except Exception as error:
        problem = as_problem(error)
        if problem is not None and problem.status == 404:  # never stocked
            return StockView(status="out_of_stock", available=0)
        code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else repr(error)
        log.warning("stock of %s unknown: %s", sku, code)
        return StockView(status="unknown")
    return StockView(
        status="in_stock" if stock.available > 0 else "out_of_stock", available=stock.available
    )


@router.get(
    "/products/{product_id}",
    summary="One product, with its stock",
    response_model=ProductDetail,
    responses=errors(401, 404, 422, 503, 504),
)
async def get_product(
    product_id: str,
    gateway: GatewayDep,
    caller: Annotated[Caller | None, Depends(optional_caller)],
) -> ProductDetail:
    """The product and its stock; `stock.status` is `unknown` when inventory did not
    answer, and the product is shown all the same."""
    auth = await gateway.credentials(caller)
    product = await gateway.backends.get_product(auth, product_id)
    is_admin = caller is not None and caller.identity.has_scope(CATALOG_ADMIN)
    if PRODUCT_STATUS.get(product.status) != "active" and not is_admin:
        # A product not on sale is not there, for anyone but the catalog's admins.
        raise from_domain_error(NotFound(f"product {product_id} not found"))
    stock = await stock_of(gateway, auth, product.sku)
    return ProductDetail(**Product.of(product).model_dump(), stock=stock)

"""The catalog, public: product pages (with ``q``) and a product with its stock.

``GET /products/{id}`` composes two services: the product from the catalog, then its
stock from inventory. Inventory is an extra, not a dependency: when it fails (down,
its breaker open, slower than ``stock_timeout_seconds``) the page is still a 200, with
``"stock": {"status": "unknown"}`` (a shop whose product pages die with its
inventory service is Online Boutique's issue 149).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Annotated

import grpc
from fastapi import APIRouter, Depends, Query, Request, Response

from gateway.api.common import PageSize, PageToken, errors, link_next
from gateway.api.models import PRODUCT_STATUS, Product, ProductDetail, ProductPage, StockView
from gateway.auth import Caller, optional_caller
from gateway.backends import Auth, Backends
from gateway.problems import VALIDATION, Problem, as_problem, from_domain_error
from gateway.state import GatewayDep
from shared.auth.scopes import CATALOG_ADMIN
from shared.errors import NotFound
from shop.product.v1 import product_pb2

log = logging.getLogger(__name__)
router = APIRouter(tags=["catalog"])

# A search walks at most this many pages of the catalog per request.
SEARCH_PAGES = 5
SEARCH_PAGE_SIZE = 100
SEARCH_TOKEN_PREFIX = "q."
ACTIVE = product_pb2.PRODUCT_STATUS_ACTIVE


def matches(product: product_pb2.Product, q: str) -> bool:
    needle = q.casefold()
    return needle in product.title.casefold() or needle in product.sku.casefold()


def search_token(backend_token: str, skip: int) -> str:
    raw = json.dumps({"t": backend_token, "s": skip}).encode()
    return SEARCH_TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode()


def parse_search_token(token: str) -> tuple[str, int]:
    if not token:
        return "", 0
    try:
        if not token.startswith(SEARCH_TOKEN_PREFIX):
            raise ValueError("not a search token")
        cursor = json.loads(base64.urlsafe_b64decode(token[len(SEARCH_TOKEN_PREFIX) :]))
        backend, skip = cursor["t"], cursor["s"]
        if not isinstance(backend, str) or not isinstance(skip, int) or skip < 0:
            raise ValueError("malformed cursor")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise Problem(
            VALIDATION,
            "page_token is not a token of this search",
            errors=[{"field": "page_token", "detail": "not a token of this search"}],
        ) from None
    return backend, skip


async def search(
    backends: Backends, auth: Auth, q: str, page_size: int, page_token: str
) -> tuple[list[product_pb2.Product], str]:
    """Up to ``page_size`` active products whose title or SKU holds ``q``. The token
    resumes inside a catalog page: (the catalog's token of that page, items to skip)."""
    token, skip = parse_search_token(page_token)
    found: list[product_pb2.Product] = []
    for _ in range(SEARCH_PAGES):
        reply = await backends.list_products(auth, SEARCH_PAGE_SIZE, token, ACTIVE)
        page = list(reply.products)
        for index in range(skip, len(page)):
            if matches(page[index], q):
                found.append(page[index])
                if len(found) == page_size:
                    more = index + 1 < len(page) or reply.next_page_token
                    return found, search_token(token, index + 1) if more else ""
        if not reply.next_page_token:
            return found, ""
        token, skip = reply.next_page_token, 0
    return found, search_token(token, 0)


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
        str | None, Query(min_length=1, max_length=100, description="Title or SKU contains")
    ] = None,
) -> ProductPage:
    """Active products, a page at a time; follow `next_page_token` (or the `Link` header)."""
    auth = await gateway.credentials(caller)
    if q:
        products, next_token = await search(gateway.backends, auth, q, page_size, page_token)
    else:
        reply = await gateway.backends.list_products(auth, page_size, page_token, ACTIVE)
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

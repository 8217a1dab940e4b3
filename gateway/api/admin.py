"""The catalog's and the stock's admins: create and change products, set stock.

The routes need the scopes ``catalog:admin`` and ``stock:admin`` (only an admin's
token carries them); the services check the token again, and take these methods from
the ``gateway`` party only with such a token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from gateway.api.common import PREFIX, IdempotencyKey, errors
from gateway.api.models import (
    PRODUCT_STATUS_PROTO,
    SKU_PATTERN,
    AdminStock,
    CreateProductIn,
    Product,
    SetStockIn,
    UpdateProductIn,
)
from gateway.auth import Caller, scoped
from gateway.idempotency import Answer, checked_key, run_once
from gateway.state import GatewayDep
from shared.auth.scopes import CATALOG_ADMIN, STOCK_ADMIN
from shop.product.v1 import product_pb2

router = APIRouter(prefix="/admin", tags=["admin"])
CatalogAdmin = Annotated[Caller, Depends(scoped(CATALOG_ADMIN))]
StockAdmin = Annotated[Caller, Depends(scoped(STOCK_ADMIN))]


@router.post(
    "/products",
    summary="Create a product",
    status_code=201,
    response_model=Product,
    responses=errors(400, 401, 403, 409, 422, 503, 504),
)
async def create_product(
    request: Request,
    body: CreateProductIn,
    gateway: GatewayDep,
    caller: CatalogAdmin,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Scope `catalog:admin`. A SKU already in the catalog is a 409."""
    key = checked_key(idempotency_key)

    async def handler() -> Answer:
        request_pb = product_pb2.CreateProductRequest(
            sku=body.sku,
            title=body.title,
            description=body.description,
            price=body.price.proto(),
            status=PRODUCT_STATUS_PROTO[body.status],  # type: ignore[arg-type]
        )
        product = await gateway.backends.create_product(caller.metadata, request_pb)
        location = f"{PREFIX}/products/{product.product_id}"
        return 201, Product.of(product).model_dump(mode="json"), {"Location": location}

    user = str(caller.identity.user_id)
    return await run_once(
        gateway.idempotency, request, user, key, body.model_dump(mode="json"), handler
    )


@router.patch(
    "/products/{product_id}",
    summary="Change a product",
    response_model=Product,
    responses=errors(401, 403, 404, 422, 503, 504),
)
async def update_product(
    product_id: str, body: UpdateProductIn, gateway: GatewayDep, caller: CatalogAdmin
) -> Product:
    """Scope `catalog:admin`. Only the fields given change."""
    request_pb = product_pb2.UpdateProductRequest(product_id=product_id)
    if body.title is not None:
        request_pb.title = body.title
    if body.description is not None:
        request_pb.description = body.description
    if body.price is not None:
        request_pb.price.CopyFrom(body.price.proto())
    if body.status is not None:
        request_pb.status = PRODUCT_STATUS_PROTO[body.status]  # type: ignore[assignment]
    return Product.of(await gateway.backends.update_product(caller.metadata, request_pb))


@router.put(
    "/stock/{sku}",
    summary="Set the stock of a SKU",
    response_model=AdminStock,
    responses=errors(401, 403, 422, 503, 504),
)
async def set_stock(
    sku: Annotated[str, Path(pattern=SKU_PATTERN)],
    body: SetStockIn,
    gateway: GatewayDep,
    caller: StockAdmin,
) -> AdminStock:
    """Scope `stock:admin`. Sets the units available for sale; the difference is booked
    as received or written off."""
    return AdminStock.of(await gateway.backends.set_stock(caller.metadata, sku, body.available))

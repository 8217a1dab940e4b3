"""Stock per SKU, public: what is available to order now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from gateway.api.common import errors
from gateway.api.models import SKU_PATTERN, Stock
from gateway.auth import Caller, optional_caller
from gateway.state import GatewayDep

router = APIRouter(tags=["catalog"])
Sku = Annotated[str, Path(pattern=SKU_PATTERN, description="The product's SKU")]


@router.get(
    "/stock/{sku}",
    summary="The stock of one SKU",
    response_model=Stock,
    responses=errors(401, 404, 422, 503, 504),
)
async def get_stock(
    sku: Sku,
    gateway: GatewayDep,
    caller: Annotated[Caller | None, Depends(optional_caller)],
) -> Stock:
    """Units available to order now (not those reserved by orders in flight)."""
    stock = await gateway.backends.get_stock(await gateway.credentials(caller), sku)
    return Stock.of(stock)

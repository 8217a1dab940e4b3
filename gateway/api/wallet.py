"""The caller's wallet: its balance, and top-ups (with an Idempotency-Key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gateway.api.common import IdempotencyKey, errors
from gateway.api.models import TopUpIn, Wallet
from gateway.auth import Caller, scoped
from gateway.idempotency import Answer, checked_key, run_once
from gateway.state import GatewayDep
from shared.auth.scopes import WALLET_READ, WALLET_WRITE

router = APIRouter(tags=["wallet"])


@router.get(
    "/wallet",
    summary="The caller's wallet",
    response_model=Wallet,
    responses=errors(401, 403, 503, 504),
)
async def get_wallet(
    gateway: GatewayDep, caller: Annotated[Caller, Depends(scoped(WALLET_READ))]
) -> Wallet:
    """Scope `wallet:read`."""
    return Wallet.of(await gateway.backends.get_balance(caller.metadata))


@router.post(
    "/wallet/top-ups",
    summary="Add funds to the caller's wallet",
    response_model=Wallet,
    responses=errors(400, 401, 403, 409, 422, 503, 504),
)
async def top_up(
    request: Request,
    body: TopUpIn,
    gateway: GatewayDep,
    caller: Annotated[Caller, Depends(scoped(WALLET_WRITE))],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Scope `wallet:write`. The wallet after the top-up; the key makes a retry a no-op
    (at the payment service too)."""
    key = checked_key(idempotency_key)

    async def handler() -> Answer:
        wallet = await gateway.backends.top_up(caller.metadata, body.amount.proto(), key)
        return 200, Wallet.of(wallet).model_dump(mode="json"), {}

    user = str(caller.identity.user_id)
    return await run_once(
        gateway.idempotency, request, user, key, body.model_dump(mode="json"), handler
    )

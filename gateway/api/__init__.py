"""The REST/JSON resources under /api/v1, and the health endpoints."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api import admin, cart, events, orders, products, stock, wallet
from gateway.api.common import PREFIX


def api_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    for module in (products, stock, cart, orders, events, wallet, admin):
        router.include_router(module.router)
    return router

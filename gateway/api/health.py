"""Liveness and readiness, for the launcher, Kubernetes and load balancers."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from gateway.problems import Problem, Rule, documented
from gateway.state import GatewayDep

router = APIRouter(prefix="/healthz", tags=["health"])
NOT_READY = Rule(503, "not-ready", "Not ready")


class Health(BaseModel):
    status: str


@router.get("/live", summary="The process answers", response_model=Health)
async def live() -> Health:
    """200 while the process serves; no dependency is asked."""
    return Health(status="alive")


@router.get("/ready", summary="Ready to serve", response_model=Health, responses=documented(503))
async def ready(gateway: GatewayDep) -> Health:
    """200 once the token signing keys are loaded from etcd and the database answers."""
    if not gateway.auth.ready:
        raise Problem(NOT_READY, "no token signing key is known yet", headers={"Retry-After": "1"})
    if not gateway.database_ok():
        raise Problem(NOT_READY, "the database does not answer", headers={"Retry-After": "1"})
    return Health(status="ready")

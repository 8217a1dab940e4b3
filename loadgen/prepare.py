"""A scenario's setup, before anything is measured: catalog and stock, buyers warmed and
funded, and the operations its arrivals will run (over gRPC, or REST through the gateway).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from loadgen.buyers import Buyer, TokenCache, refresh_rejected
from loadgen.calls import Calls
from loadgen.driver import Recorder
from loadgen.rest import RestCalls
from loadgen.rest_scenarios import RestOperations, fund_rest, warm_rest
from loadgen.scenarios import (
    Arrival,
    CatalogItem,
    Operations,
    fund_buyers,
    make_plan,
    prepare_catalog,
)
from loadgen.settings import ACCOUNTS, FLASH_SALE, ScenarioSettings
from loadgen.target import Target
from ops.seed import ADMIN
from ops.shop_client import DEADLINE, ShopClient
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

Say = Callable[[str], None]


async def warm(target: Target, buyer: Buyer, catalog: Sequence[CatalogItem]) -> None:
    """One call per service the scenario uses, so every service has verified (and cached)
    the buyer's token and has its channels and pools up before anything is measured."""
    metadata = (("authorization", f"Bearer {buyer.token}"),)
    clients = target.clients
    await clients.call(
        "payment",
        payment_pb2_grpc.PaymentServiceStub,
        lambda s: s.GetBalance(
            payment_pb2.GetBalanceRequest(), timeout=DEADLINE, metadata=metadata
        ),
    )
    request = product_pb2.GetProductRequest(product_id=catalog[0].product_id)
    await clients.call(
        "product",
        product_pb2_grpc.ProductServiceStub,
        lambda s: s.GetProduct(request, timeout=DEADLINE, metadata=metadata),
    )
    await ShopClient(clients, token=buyer.token).list_orders(page_size=1)


@dataclass
class Prepared:
    """A scenario set up and ready to measure: nothing here was measured."""

    settings: ScenarioSettings
    run_id: str
    plan: list[Arrival]
    catalog: list[CatalogItem]
    operations: Operations | RestOperations
    setup: dict[str, Any]


async def prepare_scenario(
    settings: ScenarioSettings,
    target: Target,
    buyers: list[Buyer],
    recorder: Recorder,
    *,
    run_id: str,
    token_cache: TokenCache | None = None,
    say: Say = print,
    rest: RestCalls | None = None,
) -> Prepared:
    """Catalog and stock, buyers warmed (replaced in ``buyers`` if their token was stale)
    and funded; its operations record into ``recorder``. With ``rest`` (a REST scenario),
    the one buyer is warmed and funded through the gateway, and the arrivals go there."""
    name = settings.scenario
    setup_started = time.monotonic()
    say(f"{name}: setting up (catalog, {settings.users} buyers) ...")
    admin = ShopClient(target.clients)
    await admin.login(*ADMIN)
    plan = make_plan(settings)
    catalog = await prepare_catalog(settings, plan, admin, run_id)
    if len(buyers) < settings.users:
        raise ValueError(f"{name} needs {settings.users} buyers, got {len(buyers)}")
    key = f"load-{run_id}-{name}"
    operations: Operations | RestOperations
    if rest is not None:
        await warm_rest(rest, catalog)
        funded = await fund_rest(rest, plan, catalog, key)
        operations = RestOperations(settings, rest, catalog, run_id)
    else:
        funded = await _warm_and_fund(settings, target, buyers, plan, catalog, key, token_cache)
        users = buyers[: settings.users]
        operations = Operations(settings, Calls(target.clients, recorder), users, catalog, run_id)
    setup = _setup(setup_started, settings, catalog, funded)
    return Prepared(settings, run_id, plan, catalog, operations, setup)


async def _warm_and_fund(
    settings: ScenarioSettings,
    target: Target,
    buyers: list[Buyer],
    plan: list[Arrival],
    catalog: list[CatalogItem],
    key: str,
    token_cache: TokenCache | None,
) -> int:
    """Over gRPC: the buyers warmed (replaced in ``buyers`` if their token was stale), then
    funded by what their planned orders cost; returns the total."""
    if settings.identity == ACCOUNTS:
        buyers[: settings.users] = await refresh_rejected(
            target.clients,
            buyers[: settings.users],
            partial(warm, target, catalog=catalog),
            token_cache,
        )
    else:  # the client's token, fresh from the authorization server: nothing to replace
        await warm(target, buyers[0], catalog)
    return await fund_buyers(plan, catalog, buyers[: settings.users], target.clients, key)


def _setup(
    started: float, settings: ScenarioSettings, catalog: Sequence[CatalogItem], funded: int
) -> dict[str, Any]:
    return {
        "seconds": round(time.monotonic() - started, 2),
        "catalog": [item.sku for item in catalog],
        "stock": settings.stock if settings.scenario == FLASH_SALE else None,
        "funded_minor": funded,
    }

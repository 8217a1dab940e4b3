"""One scenario, start to end: setup, baseline, measurement, audit, report.

    setup        products and stock (admin), buyers signed in, warmed and funded
    baseline     the bare health Check, same rate, same cap, same services
    measurement  the scenario's plan, open loop; orders followed to their end
    audit        ops.audit over the service databases, re-checked while it settles
    report       reports/<scenario>-<timestamp>.json and .png, and a summary

Nothing in setup is measured. Tests call ``run_scenarios`` directly; `make
load` calls it through the CLI (``python -m loadgen``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from loadgen import plot, report
from loadgen.buyers import Buyer, TokenCache, refresh_rejected, sign_in_buyers
from loadgen.calls import CHECK, PLACE_ORDER_DEADLINE, Calls
from loadgen.driver import DriveResult, OpenLoop, Recorder
from loadgen.scenarios import (
    SERVICE_OF,
    Arrival,
    CatalogItem,
    Operations,
    fund_buyers,
    intended_states,
    make_plan,
    new_run_id,
    prepare_catalog,
)
from loadgen.services_saw import what_services_saw
from loadgen.settings import FLASH_SALE, ScenarioSettings
from loadgen.stats import all_rpc_figures, saga_figures
from loadgen.target import Target
from ops.audit import audit
from ops.seed import ADMIN
from ops.shop_client import DEADLINE, ShopClient
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

log = logging.getLogger(__name__)

Say = Callable[[str], None]
T = TypeVar("T")


@dataclass
class ScenarioResult:
    report: dict[str, Any]
    json_path: Path
    png_path: Path
    summary: str

    @property
    def ok(self) -> bool:
        return bool(self.report["ok"])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }


async def _warm(target: Target, buyer: Buyer, catalog: Sequence[CatalogItem]) -> None:
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


async def _drive_baseline(
    settings: ScenarioSettings, plan: Sequence[Arrival], target: Target
) -> tuple[Recorder, dict[str, Any]]:
    """The bare Check, arrival by arrival on the service the scenario's arrival would hit."""
    count = max(1, round(settings.rate * settings.baseline_seconds))
    services = [SERVICE_OF[plan[i % len(plan)].kind] for i in range(count)]
    recorder = Recorder()
    calls = Calls(target.clients, recorder)
    loop = OpenLoop[str](
        rate=settings.rate,
        concurrency=settings.concurrency,
        op=calls.check,
        on_drop=lambda _service: recorder.drop(CHECK),
        drain_timeout=10.0,
    )
    result = await loop.run(services, recorder)
    return recorder, report.load_figures(result, settings)


@dataclass
class Prepared:
    """A scenario set up and ready to measure: nothing here was measured."""

    settings: ScenarioSettings
    run_id: str
    plan: list[Arrival]
    catalog: list[CatalogItem]
    operations: Operations
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
) -> Prepared:
    """Catalog and stock, buyers warmed (replaced in ``buyers`` if their token was stale)
    and funded; its operations record into ``recorder``."""
    name = settings.scenario
    setup_started = time.monotonic()
    say(f"{name}: setting up (catalog, {settings.users} buyers) ...")
    admin = ShopClient(target.clients)
    await admin.login(*ADMIN)
    plan = make_plan(settings)
    catalog = await prepare_catalog(settings, plan, admin, run_id)
    if len(buyers) < settings.users:
        raise ValueError(f"{name} needs {settings.users} buyers, got {len(buyers)}")
    buyers[: settings.users] = await refresh_rejected(
        target.clients,
        buyers[: settings.users],
        partial(_warm, target, catalog=catalog),
        token_cache,
    )
    users = buyers[: settings.users]
    funded = await fund_buyers(plan, catalog, users, target.clients, f"load-{run_id}-{name}")
    setup = {
        "seconds": round(time.monotonic() - setup_started, 2),
        "catalog": [item.sku for item in catalog],
        "stock": settings.stock if name == FLASH_SALE else None,
        "funded_minor": funded,
    }
    operations = Operations(settings, Calls(target.clients, recorder), users, catalog, run_id)
    return Prepared(settings, run_id, plan, catalog, operations, setup)


async def measure(
    rate: float,
    concurrency: int,
    arrivals: Sequence[T],
    op: Callable[[T, float], Coroutine[Any, Any, bool]],
    recorder: Recorder,
    *,
    kind: Callable[[T], str],
    drain_timeout: float,
    during: Callable[[Recorder], Awaitable[Any]] | None = None,
) -> tuple[DriveResult, Any]:
    """The open loop over ``arrivals``; ``during(recorder)`` (a fault schedule, say) runs
    beside it from the first arrival on and is awaited too. Returns both results."""
    loop = OpenLoop[T](
        rate=rate,
        concurrency=concurrency,
        op=op,
        on_drop=lambda arrival: recorder.drop(kind(arrival)),
        drain_timeout=drain_timeout,
    )
    if during is None:
        return await loop.run(arrivals, recorder), None
    driving = asyncio.ensure_future(loop.run(arrivals, recorder))
    # The loop sets recorder.origin before its first sleep: start the hook after that.
    await asyncio.sleep(0)
    try:
        beside = await during(recorder)
    except BaseException:
        driving.cancel()
        raise
    return await driving, beside


async def run_scenario(
    settings: ScenarioSettings,
    target: Target,
    buyers: list[Buyer],
    reports_dir: Path,
    *,
    profile: str = "custom",
    token_cache: TokenCache | None = None,
    say: Say = print,
) -> ScenarioResult:
    """Runs one scenario; ``buyers[:users]`` are used, and replaced if their token was stale."""
    started_at, run_id = _now(), new_run_id()
    name = settings.scenario
    machine = _machine()
    recorder = Recorder()
    prepared = await prepare_scenario(
        settings, target, buyers, recorder, run_id=run_id, token_cache=token_cache, say=say
    )
    plan, setup = prepared.plan, prepared.setup

    say(f"{name}: baseline Check at {settings.rate:g}/s for {settings.baseline_seconds:g}s ...")
    baseline_recorder, baseline_load = await _drive_baseline(settings, plan, target)
    baseline_rpcs = all_rpc_figures(
        baseline_recorder.calls, baseline_recorder.dropped, settings.baseline_seconds
    )

    say(f"{name}: measuring at {settings.rate:g}/s for {settings.duration:g}s ...")
    measured_from = time.time()
    result, _ = await measure(
        settings.rate,
        settings.concurrency,
        plan,
        prepared.operations.execute,
        recorder,
        kind=lambda arrival: arrival.kind,
        drain_timeout=settings.saga_deadline + PLACE_ORDER_DEADLINE + 10.0,
    )
    machine = machine | {"loadavg_1m_after": round(os.getloadavg()[0], 2)}
    load = report.load_figures(result, settings)
    rpcs = all_rpc_figures(recorder.calls, recorder.dropped, settings.duration)
    saga = None
    if "PlaceOrder" in rpcs:
        placed = rpcs["PlaceOrder"]
        saga = saga_figures(
            recorder.sagas,
            settings.duration,
            intended_states(settings),
            offered=placed["count"] + placed["dropped"],
        )
        if name == FLASH_SALE:
            ok_orders = saga["orders"]
            saga["expected_confirmed"] = min(settings.stock, ok_orders)
            saga["sold_as_expected"] = (
                saga["terminal"].get("CONFIRMED", 0) == saga["expected_confirmed"]
            )

    say(f"{name}: audit (settles for up to {settings.settle:g}s) ...")
    audit_started = time.monotonic()
    audited = await audit(target.audit_dsns, settle=settings.settle)
    audit_figures = audited.as_dict() | {
        "settle_s": settings.settle,
        "took_s": round(time.monotonic() - audit_started, 2),
    }

    document = report.build(
        profile=profile,
        settings=settings,
        run_id=run_id,
        started_at=started_at,
        finished_at=_now(),
        target={"name": target.name, "instances": target.instances()},
        machine=machine,
        setup=setup,
        baseline_rpcs=baseline_rpcs,
        baseline_load=baseline_load,
        rpcs=rpcs,
        saga=saga,
        load=load,
        audit=audit_figures,
    )
    if target.prometheus_url:
        document["services_saw"] = await asyncio.to_thread(
            what_services_saw, target.prometheus_url, measured_from, time.time()
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = reports_dir / f"{name}-{stamp}.json"
    png_path = json_path.with_suffix(".png")
    document["files"] = {"json": str(json_path), "png": str(png_path)}
    report.write_json(document, json_path)
    plot.plot(png_path, document, recorder.calls, recorder.sagas, baseline_recorder.calls[CHECK])
    text = report.summary(document, json_path, png_path)
    say(text)
    return ScenarioResult(document, json_path, png_path, text)


async def run_scenarios(
    scenarios: Sequence[ScenarioSettings],
    target: Target,
    reports_dir: Path,
    *,
    profile: str = "custom",
    token_cache: TokenCache | None = None,
    say: Say = print,
) -> list[ScenarioResult]:
    """Signs the buyers in once (the most any scenario needs), then runs each scenario."""
    count = max(s.users for s in scenarios)
    say(f"signing in {count} buyers (Register/Login through the user service) ...")
    started = time.monotonic()
    buyers = await sign_in_buyers(target.clients, count, token_cache)
    say(f"buyers ready in {time.monotonic() - started:.1f}s")
    return [
        await run_scenario(
            settings,
            target,
            buyers,
            reports_dir,
            profile=profile,
            token_cache=token_cache,
            say=say,
        )
        for settings in scenarios
    ]

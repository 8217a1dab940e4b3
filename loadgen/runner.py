"""One scenario, start to end: setup, baseline, measurement, audit, report.

    setup        products and stock (admin), buyers signed in, warmed and funded
    baseline     the bare health Check, same rate, same cap, same services
    measurement  the scenario's plan, open loop; orders followed to their end
    audit        ops.audit over the service databases, re-checked while it settles
    report       reports/<scenario>-<timestamp>.json and .png, and a summary

Nothing in setup is measured. Tests call ``run_scenarios`` directly; `make
load` calls it through the CLI (``python -m loadgen``). A REST scenario (``via rest``)
sends its arrivals to the gateway (loadgen/rest.py) and its baseline is the gateway's
bare ``GET /healthz/live``; its one buyer is the loadgen OAuth2 client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from loadgen import plot, report
from loadgen.buyers import Buyer, TokenCache, sign_in_buyers
from loadgen.calls import CHECK, PLACE_ORDER_DEADLINE, Calls
from loadgen.driver import DriveResult, OpenLoop, Recorder
from loadgen.prepare import prepare_scenario
from loadgen.rest import ROUTES, RestCalls, http_client
from loadgen.scenarios import (
    SERVICE_OF,
    Arrival,
    intended_states,
    new_run_id,
)
from loadgen.services_saw import what_services_saw
from loadgen.settings import ACCOUNTS, FLASH_SALE, REST, ScenarioSettings
from loadgen.stats import all_rpc_figures, saga_figures
from loadgen.target import Target
from ops.audit import audit

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


async def _drive_baseline(
    settings: ScenarioSettings, plan: Sequence[Arrival], target: Target, rest: RestCalls | None
) -> tuple[Recorder, dict[str, Any]]:
    """The bare Check, arrival by arrival on the service the scenario's arrival would hit;
    over REST, the gateway's bare liveness instead (recorded under the same name)."""
    count = max(1, round(settings.rate * settings.baseline_seconds))
    services = [SERVICE_OF[plan[i % len(plan)].kind] for i in range(count)]
    recorder = Recorder()
    calls = Calls(target.clients, recorder)
    bare = RestCalls(rest.http, rest.token, recorder) if rest is not None else None

    async def op(service: str, started: float) -> bool:
        if bare is not None:
            return await bare.live(started)
        return await calls.check(service, started)

    loop = OpenLoop[str](
        rate=settings.rate,
        concurrency=settings.concurrency,
        op=op,
        on_drop=lambda _service: recorder.drop(CHECK),
        drain_timeout=10.0,
    )
    result = await loop.run(services, recorder)
    return recorder, report.load_figures(result, settings)


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
    """Runs one scenario; ``buyers[:users]`` are used, and replaced if their token was stale.
    A REST scenario gets an HTTP client of its own, its pool as large as its in-flight cap."""
    recorder = Recorder()
    async with contextlib.AsyncExitStack() as scope:
        rest = None
        if settings.via == REST:
            url, cap = target.gateway(), settings.concurrency
            http = await scope.enter_async_context(http_client(url, cap))
            # The event streams on a client of their own, a connection each, closed when its
            # stream ends: httpx's pool does work in the square of the connections it holds
            # for every request it places (httpcore 1.0), and one pool holding a connection
            # per order in flight made the generator, not the gateway, set the pace.
            streams = await scope.enter_async_context(http_client(url, cap, keep_alive=False))
            rest = RestCalls(http, target.client_token(), recorder, streams)
        return await _run_scenario(
            settings, target, buyers, reports_dir, recorder, rest, profile, token_cache, say
        )


async def _run_scenario(
    settings: ScenarioSettings,
    target: Target,
    buyers: list[Buyer],
    reports_dir: Path,
    recorder: Recorder,
    rest: RestCalls | None,
    profile: str,
    token_cache: TokenCache | None,
    say: Say,
) -> ScenarioResult:
    started_at, run_id = _now(), new_run_id()
    name = settings.label
    machine = _machine()
    prepared = await prepare_scenario(
        settings,
        target,
        buyers,
        recorder,
        run_id=run_id,
        token_cache=token_cache,
        say=say,
        rest=rest,
    )
    plan, setup = prepared.plan, prepared.setup

    bare = "GET /healthz/live" if rest else "Check"
    say(f"{name}: baseline {bare} at {settings.rate:g}/s for {settings.baseline_seconds:g}s ...")
    baseline_recorder, baseline_load = await _drive_baseline(settings, plan, target, rest)
    baseline_rpcs = all_rpc_figures(
        baseline_recorder.calls, baseline_recorder.dropped, settings.baseline_seconds
    )

    say(f"{name}: measuring at {settings.rate:g}/s for {settings.duration:g}s ...")
    measured_from, cpu_from = time.time(), time.process_time()
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
    # What the generator itself spent (CPU of this process, all threads) per arrival: the
    # client's own cost, which differs between gRPC and REST.
    load["generator_cpu_ms_per_arrival"] = round(
        1000 * (time.process_time() - cpu_from) / settings.arrivals, 3
    )
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
        if settings.scenario == FLASH_SALE:
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
    if rest is not None:
        document["baseline"]["rpc"] = ROUTES[CHECK]
        document["edge"] = edge_figures(rest, rpcs)
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


def edge_figures(rest: RestCalls, rpcs: dict[str, Any]) -> dict[str, Any]:
    """What a REST report adds: where the load went, as whom, and whether the gateway's
    rate limit refused any of it (then the run measured the limit, not the edge)."""
    refused = sum(f["errors"].get("HTTP_429", 0) for f in rpcs.values())
    return {
        "via": REST,
        "gateway": str(rest.http.base_url),
        "routes": {name: ROUTES[name] for name in rpcs if name in ROUTES},
        "client_id": rest.token.client_id,
        "tokens_fetched": rest.token.fetched,
        "rate_limited": refused,
    }


async def run_scenarios(
    scenarios: Sequence[ScenarioSettings],
    target: Target,
    reports_dir: Path,
    *,
    profile: str = "custom",
    token_cache: TokenCache | None = None,
    say: Say = print,
) -> list[ScenarioResult]:
    """Signs the buyers in once (the most any scenario needs), then runs each scenario; a
    scenario of the loadgen client gets its one buyer, with a fresh token, just before."""
    count = max((s.users for s in scenarios if s.identity == ACCOUNTS), default=0)
    buyers: list[Buyer] = []
    if count:
        say(f"signing in {count} buyers (Register/Login through the user service) ...")
        started = time.monotonic()
        buyers = await sign_in_buyers(target.clients, count, token_cache)
        say(f"buyers ready in {time.monotonic() - started:.1f}s")
    results = []
    for settings in scenarios:
        client = settings.identity != ACCOUNTS
        chosen = [await target.client_token().buyer()] if client else buyers
        results.append(
            await run_scenario(
                settings,
                target,
                chosen,
                reports_dir,
                profile=profile,
                token_cache=token_cache,
                say=say,
            )
        )
    return results

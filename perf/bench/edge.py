"""`make bench-edge`: what the REST edge costs, gRPC straight to the services against REST
through the gateway, in one run on a stack of its own.

The system runs with its gateway, whose per-client rate limit is off
(``SHOP_GATEWAY_RATE_LIMIT_ENABLED=false``), and the services' per-caller limits raised out
of reach in ``/config/global`` (the limiters still run): every call of both edges carries
the same token, the loadgen OAuth2 client's (client credentials, fetched from the
gateway's ``/oauth2/token``), whose one pseudo-user would meet them at 100 calls a second.

1. Capacity, at saturation, by tools nobody here wrote: ghz on the gRPC method against hey
   on the REST route, rounds alternating which goes first. GetProduct against ``GET
   /products/{id}`` (which asks inventory for the stock too: the REST page is two RPCs),
   and GetStock against ``GET /stock/{sku}`` (one RPC each: the edge alone).
2. Latency at a fixed rate, open loop, by the load generator: the ``browse`` and
   ``steady-saga`` plans over gRPC and over REST (loadgen/settings.py ``edge_pair``), in
   the order gRPC, REST (and REST, gRPC in a second round), each with its own report in
   reports/, then compared (loadgen/edge.py): throughput, P50/P95/P99, what REST adds.

Prints one ``bench-edge:`` line per figure; writes ``reports/bench-edge-<timestamp>.json``.

python -m perf.bench.edge [--quick] [--profile bench]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from devstack.launcher import SystemLauncher, open_directory, wipe_system_data
from devstack.stack import Stack
from loadgen import edge
from loadgen.dev_target import UNLIMITED_GATEWAY, stack_target
from loadgen.runner import run_scenarios
from loadgen.settings import BROWSE, CLIENT, STEADY_SAGA, ScenarioSettings, edge_pair
from loadgen.target import Target
from ops.config_patch import patched_config
from ops.seed import ADMIN, seed
from ops.shop_client import ShopClient
from perf.bench.__main__ import machine
from perf.bench.edge_tools import HEY, ghz, ghz_args, hey
from perf.bench.tls import GHZ
from shared.auth.keys import generate_keypair
from shared.registry.etcd import etcd_client
from shared.rpc.client import ServiceClients
from shared.settings import REPO_ROOT
from shared.tls import ClientTLS

REPORTS = REPO_ROOT / "reports"
# The services' per-caller limits, out of reach of one caller (the limiter still runs).
OUT_OF_REACH = {"rate_limits": {"default": {"rate_per_second": 1_000_000, "burst": 1_000_000}}}
SKU = "EDGE-BENCH"
PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")


@dataclass(frozen=True)
class Plan:
    tool_rounds: int = 2
    tool_seconds: float = 5.0
    tool_concurrency: int = 32
    # Rates both edges keep up with here (REST's capacity is the first phase's to find).
    browse_rate: float = 80
    saga_rate: float = 30
    seconds: float = 20
    # Two rounds: gRPC then REST, then REST then gRPC, so a drift meets both alike.
    loadgen_rounds: int = 2


FULL = Plan()
QUICK = Plan(
    tool_rounds=1, tool_seconds=1, browse_rate=10, saga_rate=5, seconds=2, loadgen_rounds=1
)
# Before anything is measured: a few orders through a fresh system (its consumers join,
# its pools fill), reported nowhere.
WARM_UP = ScenarioSettings(
    STEADY_SAGA, rate=5, duration=3, users=1, identity=CLIENT, baseline_duration=0.5, settle=20
)


def say(line: str) -> None:
    print(line, flush=True)


async def alternate(
    rounds: int, runs: dict[str, Callable[[], Awaitable[dict[str, Any]]]]
) -> dict[str, dict[str, Any]]:
    """Each run ``rounds`` times, the order turned round every round; the median of each
    figure over its rounds, and the rounds themselves."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for round_ in range(rounds):
        names = list(runs) if round_ % 2 == 0 else list(runs)[::-1]
        for name in names:
            found[name].append(await runs[name]())
    keys = ("rps", "p50_ms", "p95_ms", "p99_ms")
    return {
        name: {k: median(r[k] for r in rows) for k in keys} | {"rounds": rows}
        for name, rows in found.items()
    }


def median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


async def capacity(
    stack: Stack, target: Target, product_id: str, plan: Plan
) -> dict[str, dict[str, Any]]:
    """ghz against hey, at saturation: GetProduct and GetStock."""
    token = await target.client_token().get()
    base, c, s = target.gateway(), plan.tool_concurrency, plan.tool_seconds
    address = {n: target.directory.instances(n)[0].address for n in ("product", "inventory")}
    pairs = {
        "GetProduct": (
            "product",
            "shop.product.v1.ProductService.GetProduct",
            {"product_id": product_id},
            f"{base}/api/v1/products/{product_id}",
        ),
        "GetStock": (
            "inventory",
            "shop.inventory.v1.InventoryService.GetStock",
            {"sku": SKU},
            f"{base}/api/v1/stock/{SKU}",
        ),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, (service, call, data, url) in pairs.items():
        args = ghz_args(stack, service, address[service], token)
        say(f"bench-edge: {name}: ghz vs hey, concurrency {c}, {s:g}s x {plan.tool_rounds} ...")
        # Warm-up, not counted: connections, caches, the gateway's channels.
        await ghz(args, call, json.dumps(data), 1, c)
        await hey(url, token, 1, c)
        measured = await alternate(
            plan.tool_rounds,
            {
                "grpc": partial(ghz, args, call, json.dumps(data), s, c),
                "rest": partial(hey, url, token, s, c),
            },
        )
        g, r = measured["grpc"], measured["rest"]
        results[name] = {
            "grpc": g,
            "rest": r,
            "rest_over_grpc_rps": round(r["rps"] / g["rps"], 3) if g["rps"] else None,
            "added_ms": {k: minus(r[k], g[k]) for k in PERCENTILES},
            "rest_route": url.removeprefix(base),
        }
    return results


def capacity_lines(results: dict[str, dict[str, Any]], concurrency: int) -> list[str]:
    out = []
    for name, f in results.items():
        g, r = f["grpc"], f["rest"]

        def pct(x: dict[str, Any]) -> str:
            return "/".join("-" if x[k] is None else f"{x[k]:.1f}" for k in PERCENTILES)

        out.append(
            f"bench-edge: {name} at saturation (c={concurrency}): gRPC (ghz) {g['rps']:,.0f}/s"
            f" p50/p95/p99 {pct(g)} ms · REST (hey, {f['rest_route']}) {r['rps']:,.0f}/s"
            f" {pct(r)} ms · REST/gRPC throughput {f['rest_over_grpc_rps']}"
        )
    return out


def loadgen_scenarios(plan: Plan) -> tuple[ScenarioSettings, ...]:
    browse = ScenarioSettings(
        BROWSE, rate=plan.browse_rate, duration=plan.seconds, baseline_duration=3, settle=5
    )
    saga = ScenarioSettings(
        STEADY_SAGA, rate=plan.saga_rate, duration=plan.seconds, baseline_duration=3, settle=20
    )
    chosen: list[ScenarioSettings] = []
    for round_ in range(plan.loadgen_rounds):
        for settings in (browse, saga):
            pair = edge_pair(settings)  # the same plan every round: the pairs are averaged
            chosen += pair if round_ % 2 == 0 else pair[::-1]
    return tuple(chosen)


async def measure(stack: Stack, plan: Plan) -> dict[str, Any]:
    await wipe_system_data(stack)
    jwt_dir = stack.profile_dir / "jwt"
    generate_keypair(jwt_dir)
    log_path = stack.profile.logs_dir / "bench-edge-services.log"
    say(f"bench-edge: the system with its gateway (rate limit off); logs in {log_path}")
    with log_path.open("w") as service_log:
        launcher = SystemLauncher(
            stack,
            jwt_dir,
            extra_env=UNLIMITED_GATEWAY,
            publish_state=False,
            log_sink=lambda line: print(line, file=service_log),
            gateway=True,
        )
        async with open_directory(stack) as directory:
            clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
            etcd = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
            try:
                await launcher.start_all()
                await launcher.wait_ready(directory, timeout=120)
                await seed(clients, stack.pg_service_dsn("user"))
                admin = ShopClient(clients)
                await admin.login(*ADMIN)
                product = await admin.create_product(SKU, "Edge bench item", 1_000)
                await admin.set_stock(SKU, 1_000_000)
                target = stack_target(stack, clients, directory, launcher.public_url)
                async with patched_config(etcd, "global", "bench-edge", say=say) as patch:
                    await patch.set(OUT_OF_REACH)
                    with tempfile.TemporaryDirectory() as scratch:
                        say("bench-edge: warming up (a few orders, not measured) ...")
                        await run_scenarios([WARM_UP], target, Path(scratch), say=lambda _: None)
                    tools = await capacity(stack, target, product.product_id, plan)
                    for line in capacity_lines(tools, plan.tool_concurrency):
                        say(line)
                    results = await run_scenarios(
                        loadgen_scenarios(plan), target, REPORTS, profile="bench-edge", say=say
                    )
            finally:
                await etcd.close()
                await clients.close()
                await launcher.stop_all()
    compared = edge.compare([r.report for r in results])
    return {
        "capacity": tools,
        "open_loop": compared,
        "loadgen_ok": all(r.ok for r in results),
        "gateway": {"url": launcher.public_url, "rate_limit": "off (env)"},
    }


async def run(plan: Plan, profile: str) -> bool:
    for tool in (GHZ, HEY):
        if not tool.exists():
            raise SystemExit(f"{tool} is missing: run `make bench-edge` (it installs it)")
    host, stamp, began = machine(), datetime.now(UTC), time.monotonic()
    stack = Stack(profile)
    say(f"bench-edge: starting its stack (profile {profile}) ...")
    started = await asyncio.to_thread(stack.up)
    try:
        figures = await measure(stack, plan)
    finally:
        if started:  # a stack that was already up (the tests') stays up
            await asyncio.to_thread(stack.down)
    say("")
    for line in capacity_lines(figures["capacity"], plan.tool_concurrency):
        say(line)
    for line in edge.lines(figures["open_loop"], prefix="bench-edge"):
        say(line)
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / f"bench-edge-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "kind": "bench-edge",
        "started_at": stamp.isoformat(),
        "seconds": round(time.monotonic() - began, 1),
        "machine": host | {"loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "plan": asdict(plan),
        **figures,
    }
    edge.write(document, path)
    say(f"bench-edge: report {path}")
    return bool(figures["loadgen_ok"])


def main(
    quick: Annotated[bool, typer.Option(help="every phase, briefly (checks the bench)")] = False,
    profile: Annotated[str, typer.Option(help="the devstack profile to run on")] = "bench",
) -> None:
    ok = asyncio.run(run(QUICK if quick else FULL, profile))
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    typer.run(main)

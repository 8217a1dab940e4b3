"""`make bench`: the performance goals P1-P7 (docs/performance.md), on a stack of its own.

For each replica count (1, then 2 instances of every service) a fresh system is
started with everything on (mTLS, tokens, rate limits, breakers, tracing at the
default sampling, metrics) and measured in this order:

P1 ghz: GetProduct vs health Check on one product instance;
P4 saga at 20/s (P50);  P2 saga at 100/s (P95);  P3 the ramp on from 50/s;
A6 (a chaos goal, docs/chaos.md) the saga's P95 at 50/s, from the ramp;
P7 outbox relay lag at 500 events/s;  P6 resident memory of every instance;
P5 hot-SKU reservations/s vs pgbench (last: it restarts inventory).

Prints one ``bench: P<n> ...`` line per goal and replica count, met or NOT met, and
the rows for BENCHMARKS.md; writes everything to ``reports/bench-<timestamp>.json``.
Exits 1 only if a goal could not be measured at all (a broken phase, not a slow one).

python -m perf.bench [--replicas 1 --replicas 2] [--quick] [--profile bench]
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from devstack.launcher import SERVICES, SystemLauncher, open_directory, wipe_system_data
from devstack.stack import Stack
from ops.config_patch import patched_config
from perf.bench import goals
from perf.bench.hot_sku import hot_row_baseline, hot_sku_throughput
from perf.bench.read_path import GET_PRODUCT_OUT_OF_REACH, get_product_vs_check
from perf.bench.relay_lag import relay_lag
from perf.bench.saga import Shop, saga_hops, steady_saga, wait_sagas_ended
from perf.bench.tls import GHZ
from shared.auth.identity import Role
from shared.auth.keys import generate_keypair, load_private_key
from shared.auth.tokens import TokenIssuer
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.rpc.client import ServiceClients
from shared.settings import DEFAULT_ISSUER, REPO_ROOT
from shared.tls import ClientTLS

REPORTS = REPO_ROOT / "reports"


@dataclass(frozen=True)
class Plan:
    """How long and how hard each phase runs."""

    ghz_rounds: int = 4
    ghz_seconds: float = 5.0
    ghz_concurrency: int = 32
    saga_seconds: float = 20.0
    # P3, from below P2's rate so a system that misses 100/s still shows its capacity.
    ramp: tuple[float, ...] = (50, 75, 100, 150, 200, 250, 300)
    relay_rate: float = 500
    relay_seconds: float = 15.0
    hot_orders: int = 4000
    pgbench_seconds: int = 10
    pgbench_clients: int = 8
    buyers: int = 400


FULL = Plan()
# For the test that runs `make bench` end to end: every phase, briefly (figures meaningless).
QUICK = Plan(
    ghz_rounds=1,
    ghz_seconds=1,
    saga_seconds=2,
    ramp=(100,),
    relay_seconds=2,
    hot_orders=100,
    pgbench_seconds=2,
    buyers=20,
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "cpus": os.cpu_count(),
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
        "commit": git("rev-parse", "--short=7", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


class System:
    """One measured system: its launcher, clients and buyers, and the goals' results."""

    def __init__(
        self,
        stack: Stack,
        launcher: SystemLauncher,
        directory: ServiceDirectory,
        issuer: TokenIssuer,
        plan: Plan,
    ) -> None:
        self.stack = stack
        self.launcher = launcher
        self.directory = directory
        self.issuer = issuer
        self.plan = plan
        self.replicas = launcher.replicas.get("order", 1)
        self.clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
        self.results: list[goals.Result] = []
        self.saga_runs: list[dict[str, Any]] = []
        self.last_orders: list[str] = []  # of the last saga run
        self._shop: Shop | None = None  # its buyers, funded on first use

    async def measure(
        self, key: str, phase: Callable[[], Awaitable[tuple[float, dict[str, Any]]]]
    ) -> None:
        goal = goals.BY_KEY[key]
        print(f"  {key} {goal.name}: {goal.how} ...", flush=True)
        try:
            value, detail = await phase()
            result = goals.Result(goal, self.replicas, value, detail)
        except Exception as error:  # a broken phase is reported, and the others still run
            traceback.print_exc()
            result = goals.Result(goal, self.replicas, None, {}, error=f"{error}"[:300])
        print(f"  {result.line()}", flush=True)
        self.results.append(result)

    async def p1(self) -> tuple[float, dict[str, Any]]:
        shop = await self.shop()
        product_id = await shop.new_product("GHZ", 1)
        instance = sorted(self.directory.instances("product"), key=lambda i: i.instance_id)[0]
        token = self.issuer.issue(uuid.uuid4(), Role.CUSTOMER)[0]
        plan = self.plan
        etcd = etcd_client(self.stack.etcd_endpoint, tls=ClientTLS.operator(self.stack.tls_dir))
        try:
            async with patched_config(etcd, "product", "bench", say=print) as patch:
                await patch.set(GET_PRODUCT_OUT_OF_REACH)  # returns once every instance has it
                figures = await get_product_vs_check(
                    self.stack, instance.address, token, product_id,
                    rounds=plan.ghz_rounds, seconds=plan.ghz_seconds,
                    concurrency=plan.ghz_concurrency,
                )  # fmt: skip
        finally:
            await etcd.close()
        return figures["ratio"], figures

    async def shop(self) -> Shop:
        if self._shop is None:
            self._shop = await Shop.open(self.clients, self.issuer, self.plan.buyers)
        return self._shop

    async def saga(self, rate: float) -> dict[str, Any]:
        await wait_sagas_ended(self.stack)
        shop = await self.shop()
        figures, self.last_orders = await steady_saga(
            self.stack, shop, rate, self.plan.saga_seconds
        )
        self.saga_runs.append(figures)
        print(
            f"    {rate:g}/s: {figures['terminal']}/{figures['orders']} terminal,"
            f" P50 {figures.get('p50_ms', float('nan')):.0f} ms,"
            f" P95 {figures.get('p95_ms', float('nan')):.0f} ms",
            flush=True,
        )
        return figures

    async def saga_at(self, rate: float) -> dict[str, Any]:
        """This system's saga run at ``rate``: an earlier phase's if there was one."""
        earlier = next((r for r in self.saga_runs if r["rate"] == rate), None)
        return earlier or await self.saga(rate)

    async def p4(self) -> tuple[float, dict[str, Any]]:
        figures = await self.saga(20)
        # Where a saga's time goes at this rate, hop by hop (P50, P95 ms).
        hops = await saga_hops(self.stack, self.last_orders)
        return figures["p50_ms"], figures | {"hops_ms": hops}

    async def p2(self) -> tuple[float, dict[str, Any]]:
        figures = await self.saga(100)
        return figures["p95_ms"], figures

    async def p3(self) -> tuple[float, dict[str, Any]]:
        kept_up: dict[float, bool] = {}
        for rate in self.plan.ramp:
            figures = await self.saga_at(rate)
            kept_up[rate] = goals.sustained(
                figures["terminal"], figures["orders"], figures.get("p95_ms", float("inf"))
            )
            if not kept_up[rate]:
                break
        runs = [r for r in self.saga_runs if r["rate"] in kept_up]
        return goals.capacity(kept_up), {"ramp": runs}

    async def a6(self) -> tuple[float, dict[str, Any]]:
        figures = await self.saga_at(50)
        return figures["p95_ms"], figures

    async def p7(self) -> tuple[float, dict[str, Any]]:
        await wait_sagas_ended(self.stack)
        figures = await relay_lag(self.stack, self.plan.relay_rate, self.plan.relay_seconds)
        if figures["sent"] < figures["events"]:
            raise RuntimeError(f"{figures['events'] - figures['sent']} events never published")
        return figures["p99_ms"], figures

    async def p6(self) -> tuple[float, dict[str, Any]]:
        sizes = {
            p.instance_id: round(rss_mb(p.process.pid), 1)
            for p in self.launcher.processes
            if p.process.returncode is None
        }
        return max(sizes.values()), {"rss_mb": sizes}

    async def p5(self) -> tuple[float, dict[str, Any]]:
        await wait_sagas_ended(self.stack)
        plan = self.plan
        baseline = await hot_row_baseline(self.stack, plan.pgbench_clients, plan.pgbench_seconds)
        hot = await hot_sku_throughput(
            self.stack, self.launcher, self.clients, self.issuer, plan.hot_orders
        )
        if hot["oversold"]:
            raise RuntimeError(f"oversold {hot['oversold']:.0f} units")
        return hot["per_second"] / baseline, {"pgbench_tps": round(baseline, 1), **hot}

    async def run(self) -> None:
        for key, phase in (
            ("P1", self.p1),
            ("P4", self.p4),
            ("P2", self.p2),
            ("P3", self.p3),
            ("A6", self.a6),  # the ramp's 50/s run, if it had one
            ("P7", self.p7),
            ("P6", self.p6),
            ("P5", self.p5),
        ):
            await self.measure(key, phase)

    async def close(self) -> None:
        await self.clients.close()


async def measure_system(
    stack: Stack, jwt_dir: Path, issuer: TokenIssuer, replicas: int, plan: Plan
) -> list[goals.Result]:
    await wipe_system_data(stack)
    log_path = stack.profile.logs_dir / f"bench-services-{replicas}.log"
    print(f"bench: {replicas} instance(s) per service; service logs in {log_path}", flush=True)
    with log_path.open("w") as service_log:
        launcher = SystemLauncher(
            stack,
            jwt_dir,
            replicas={service: replicas for service in SERVICES},
            publish_state=False,
            log_sink=lambda line: print(line, file=service_log),
        )
        # The directory closes before the stack goes down, so its watch sees no outage.
        async with open_directory(stack) as directory:
            system = System(stack, launcher, directory, issuer, plan)
            try:
                await launcher.start_all()
                await launcher.wait_ready(directory, timeout=120)
                await system.run()
            finally:
                await system.close()
                await launcher.stop_all()
    return system.results


def benchmarks_row(stamp: datetime, host: dict[str, Any], results: list[goals.Result]) -> str:
    """One row of BENCHMARKS.md's table for one replica count."""
    by_key = {r.goal.key: r for r in results}

    def cell(key: str) -> str:
        result = by_key.get(key)
        if result is None or result.value is None:
            return "—"
        value = result.value
        text = f"{value:.2f}" if not result.goal.unit else f"{value:,.0f}"
        return text if result.met else f"**{text}** ✗"

    commit = host["commit"] + ("+" if host["dirty"] else "")
    cells = [
        stamp.strftime("%Y-%m-%d"),
        f"`{commit}`",
        f"{host['cpus']} CPUs, load {host['loadavg_1m_before']:.1f}",
        str(results[0].replicas),
        *(cell(g.key) for g in goals.GOALS),
        "",  # what changed: written by hand
    ]
    return "| " + " | ".join(cells) + " |"


async def run(replica_counts: list[int], plan: Plan, profile: str) -> bool:
    if not GHZ.exists():
        raise SystemExit(f"{GHZ} is missing: run `make grpc-tools`")
    host = machine()
    stamp = datetime.now(UTC)
    stack = Stack(profile)
    print(f"bench: starting its stack (profile {profile}) ...", flush=True)
    started = await asyncio.to_thread(stack.up)
    results: list[goals.Result] = []
    began = time.monotonic()
    try:
        jwt_dir = stack.profile_dir / "jwt"
        generate_keypair(jwt_dir)
        issuer = TokenIssuer(
            load_private_key(jwt_dir / "private.pem"),
            DEFAULT_ISSUER,
            "shop",
            ttl=timedelta(hours=2),
        )
        for replicas in replica_counts:
            results += await measure_system(stack, jwt_dir, issuer, replicas, plan)
    finally:
        if started:  # a stack that was already up (the tests') stays up
            await asyncio.to_thread(stack.down)
    rows = [
        benchmarks_row(stamp, host, [r for r in results if r.replicas == n]) for n in replica_counts
    ]
    print()
    for result in results:
        print(result.line())
    print("bench: rows for BENCHMARKS.md:")
    for row in rows:
        print(row)
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / f"bench-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "kind": "bench",
        "started_at": stamp.isoformat(),
        "seconds": round(time.monotonic() - began, 1),
        "machine": host | {"loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "plan": asdict(plan),
        "results": [r.as_json() for r in results],
        "benchmarks_rows": rows,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"bench: report {path}")
    return all(r.value is not None for r in results)


def main(
    replicas: Annotated[
        list[int] | None, typer.Option(help="instances per service; repeat for several")
    ] = None,
    quick: Annotated[bool, typer.Option(help="every phase, briefly (checks the bench)")] = False,
    profile: Annotated[str, typer.Option(help="the devstack profile to run on")] = "bench",
) -> None:
    measured = asyncio.run(run(replicas or [1, 2], QUICK if quick else FULL, profile))
    raise typer.Exit(0 if measured else 1)


if __name__ == "__main__":
    typer.run(main)

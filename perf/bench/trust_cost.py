"""`make bench-trust`: what trust below the gRPC ports costs (docs/decisions/trust-below-grpc.md).

The same system measured twice in one run, on two stacks one after the other (never
both at once; each is stopped after use):

- off: profile ``bench-plain``, which exists for this measurement only: etcd in plain
  http without auth, Kafka with PLAINTEXT listeners and no authorizer, PostgreSQL
  without TLS and with ``trust`` on loopback. The services are told so by
  ``SHOP_<SVC>_INFRA_TLS=false`` (shared/settings.py), the DSN by ``sslmode=disable``.
- on: profile ``bench``, as every stack runs: TLS with client certificates and ACLs
  or roles on etcd and Kafka, TLS and scram passwords on PostgreSQL.

gRPC's own mTLS and tokens are on in both; tracing and metrics too (what `make run`
starts). Prometheus runs in neither (its targets bridge reads etcd over TLS only).
Measured on each stack, in this order:

- the saga's P50 and P95 at 20 and at 50 orders/s (perf/bench/saga.py, open loop),
  after a short warm-up run that is not counted;
- the outbox relay's lag, P50 and P99 at a fixed rate (perf/bench/relay_lag.py);
- the consumer's throughput: records/s a raw aiokafka consumer drains from a backlog
  of N records, committing its offsets after every poll as the idempotent consumer
  does, with the same fetch settings, but no database (the services stopped by then).

Off then on, once (``--rounds 2`` runs off, on, on, off and takes the mean of each).
Prints one line per figure with off, on, the difference and the ratio; writes
``reports/bench-trust-<timestamp>.json``. Exits 1 only if a figure could not be measured.

python -m perf.bench.trust_cost [--quick] [--rounds N]
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import statistics
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import typer

from devstack.launcher import SystemLauncher, open_directory, wipe_system_data
from devstack.stack import PLAINTEXT_COMPONENTS, Stack
from perf.bench.__main__ import REPORTS, machine
from perf.bench.consumer_drain import drain, drain_topic, fill_backlog
from perf.bench.relay_lag import relay_lag
from perf.bench.saga import Shop, steady_saga, wait_sagas_ended
from shared.auth.keys import generate_keypair, load_private_key
from shared.auth.tokens import TokenIssuer
from shared.rpc.client import ServiceClients
from shared.settings import DEFAULT_ISSUER
from shared.tls import ClientTLS

OFF: Final = "bench-plain"
ON: Final = "bench"
# The same daemons on both stacks: bench-plain runs no Prometheus, so neither does bench.
COMPONENTS: Final = PLAINTEXT_COMPONENTS
DRAIN_TOPIC: Final = "bench.consumer-drain.v1"
DRAIN_PARTITIONS: Final = 6  # as the saga's topics


@dataclass(frozen=True)
class Plan:
    saga_rates: tuple[float, ...] = (20, 50)
    # A first saga run at a low rate, not counted: connections, pools and caches warm.
    warmup_rate: float = 10
    warmup_seconds: float = 5.0
    saga_seconds: float = 20.0
    relay_rate: float = 500
    relay_seconds: float = 15.0
    drain_records: int = 50_000
    record_bytes: int = 256
    drain_rounds: int = 3
    buyers: int = 200


FULL = Plan()
# Every phase, briefly: checks the bench, the figures mean little.
QUICK = Plan(
    warmup_seconds=1,
    saga_seconds=3,
    relay_seconds=2,
    drain_records=5_000,
    drain_rounds=1,
    buyers=20,
)


@dataclass(frozen=True)
class Figure:
    """One measured quantity: its key in a stack's results, how it reads, which way is good."""

    key: str
    label: str
    unit: str
    higher_is_better: bool = False


def figures_of(plan: Plan) -> list[Figure]:
    saga = [
        Figure(f"saga_{p}_{rate:g}", f"saga {p.upper()} at {rate:g} orders/s", "ms")
        for rate in plan.saga_rates
        for p in ("p50", "p95")
    ]
    return [
        *saga,
        Figure("relay_p50", f"relay lag P50 at {plan.relay_rate:g} events/s", "ms"),
        Figure("relay_p99", f"relay lag P99 at {plan.relay_rate:g} events/s", "ms"),
        Figure("drain_rps", "consumer drain (raw aiokafka, commit per poll)", "records/s", True),
    ]


def cost_line(figure: Figure, off: float | None, on: float | None) -> str:
    """``<label>: off X, on Y, difference D (ratio on/off R)`` or what is missing."""
    if off is None or on is None:
        return f"bench-trust: {figure.label}: NOT MEASURED (off {_num(off)}, on {_num(on)})"
    ratio = on / off if off else math.inf
    worse = (on < off) if figure.higher_is_better else (on > off)
    change = (on - off) / off * 100 if off else math.inf
    verdict = "costlier" if worse and abs(change) >= 0.05 else "no cost"
    return (
        f"bench-trust: {figure.label}: off {_num(off)} {figure.unit}, on {_num(on)}"
        f" {figure.unit}, {on - off:+,.1f} {figure.unit} ({change:+.1f}%, ratio"
        f" {ratio:.2f}; {verdict} with TLS and auth)"
    )


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def benchmarks_table(
    figures: list[Figure], off: dict[str, float | None], on: dict[str, float | None]
) -> list[str]:
    """The rows of BENCHMARKS.md's table."""
    rows = [
        "| figure | off (no TLS, no auth) | on (TLS, auth) | on - off | on / off |",
        "|---|---:|---:|---:|---:|",
    ]
    for figure in figures:
        a, b = off.get(figure.key), on.get(figure.key)
        if a is None or b is None:
            rows.append(f"| {figure.label} | {_num(a)} | {_num(b)} | — | — |")
            continue
        ratio = f"{b / a:.2f}" if a else "—"
        rows.append(
            f"| {figure.label} ({figure.unit}) | {a:,.1f} | {b:,.1f} | {b - a:+,.1f} | {ratio} |"
        )
    return rows


def mean_of(runs: list[dict[str, float | None]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    if len(values) < len(runs) or not values:
        return None
    return round(statistics.mean(v for v in values if v is not None), 1)


# --- the measurements ----------------------------------------------------------------------


async def consumer_throughput(stack: Stack, plan: Plan) -> dict[str, Any]:
    async with drain_topic(stack, DRAIN_TOPIC, DRAIN_PARTITIONS):
        fill = await fill_backlog(stack, DRAIN_TOPIC, plan.drain_records, plan.record_bytes)
        rates = [
            await drain(stack, DRAIN_TOPIC, plan.drain_records) for _ in range(plan.drain_rounds)
        ]
    return {
        "records": plan.drain_records,
        "record_bytes": plan.record_bytes,
        "fill_seconds": round(fill, 2),
        "rounds_per_second": [round(r, 1) for r in rates],
        "per_second": round(statistics.median(rates), 1),
    }


class StackRun:
    """One stack's figures: each phase measured on its own, a broken one recorded."""

    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.values: dict[str, float | None] = {}
        self.detail: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    async def phase(
        self, name: str, keys: list[str], measure: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any] | None:
        print(f"  [{self.profile}] {name} ...", flush=True)
        try:
            detail = await measure()
        except Exception as error:  # reported; the other phases still run
            traceback.print_exc()
            self.errors[name] = f"{error}"[:300]
            for key in keys:
                self.values[key] = None
            return None
        self.detail[name] = detail
        return detail


async def measure_stack(profile: str, plan: Plan) -> StackRun:
    stack = Stack(profile)
    run = StackRun(profile)
    assert stack.infra_tls == (profile != OFF)
    print(
        f"bench-trust: stack {profile} (TLS and auth below gRPC"
        f" {'on' if stack.infra_tls else 'OFF'}) ...",
        flush=True,
    )
    started = await asyncio.to_thread(stack.up, COMPONENTS)
    try:
        await wipe_system_data(stack)
        jwt_dir = stack.profile_dir / "jwt"
        generate_keypair(jwt_dir)
        issuer = TokenIssuer(
            load_private_key(jwt_dir / "private.pem"),
            DEFAULT_ISSUER,
            "shop",
            ttl=timedelta(hours=1),
        )
        log_path = stack.profile.logs_dir / "bench-trust-services.log"
        with log_path.open("w") as service_log:
            launcher = SystemLauncher(
                stack,
                jwt_dir,
                publish_state=False,
                log_sink=lambda line: print(line, file=service_log),
            )
            async with open_directory(stack) as directory:
                clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
                try:
                    await launcher.start_all()
                    await launcher.wait_ready(directory, timeout=120)
                    await measure_services(stack, run, clients, issuer, plan)
                finally:
                    await clients.close()
                    await launcher.stop_all()
        # With the services stopped: only the consumer under test reads from Kafka.
        drained = await run.phase(
            "consumer drain", ["drain_rps"], lambda: consumer_throughput(stack, plan)
        )
        if drained is not None:
            run.values["drain_rps"] = drained["per_second"]
            print(
                f"    {drained['per_second']:,.0f} records/s"
                f" (rounds {drained['rounds_per_second']})",
                flush=True,
            )
    finally:
        # bench-plain is this bench's alone; bench is left up if it was up before (a run
        # of `make bench`'s), as perf/bench does.
        if started or profile == OFF:
            await asyncio.to_thread(stack.down)
        else:
            print(f"bench-trust: stack {profile} was already up; left running", flush=True)
    return run


async def measure_services(
    stack: Stack, run: StackRun, clients: ServiceClients, issuer: TokenIssuer, plan: Plan
) -> None:
    shop: Shop | None = None

    async def saga(rate: float, seconds: float = plan.saga_seconds) -> dict[str, Any]:
        nonlocal shop
        await wait_sagas_ended(stack)
        if shop is None:
            shop = await Shop.open(clients, issuer, plan.buyers)
        figures, _ = await steady_saga(stack, shop, rate, seconds)
        if figures["terminal"] < figures["orders"]:
            print(f"    {figures['orders'] - figures['terminal']} orders not terminal in time")
        return figures

    await run.phase(
        f"warm-up saga at {plan.warmup_rate:g}/s (not counted)",
        [],
        functools.partial(saga, plan.warmup_rate, plan.warmup_seconds),
    )
    for rate in plan.saga_rates:
        keys = [f"saga_p50_{rate:g}", f"saga_p95_{rate:g}"]
        figures = await run.phase(f"saga at {rate:g}/s", keys, functools.partial(saga, rate))
        if figures is not None:
            run.values[keys[0]] = figures.get("p50_ms")
            run.values[keys[1]] = figures.get("p95_ms")
            print(
                f"    {figures['terminal']}/{figures['orders']} terminal,"
                f" P50 {_num(figures.get('p50_ms'))} ms, P95 {_num(figures.get('p95_ms'))} ms",
                flush=True,
            )

    async def lag() -> dict[str, Any]:
        await wait_sagas_ended(stack)
        figures = await relay_lag(stack, plan.relay_rate, plan.relay_seconds)
        if figures["sent"] < figures["events"]:
            raise RuntimeError(f"{figures['events'] - figures['sent']} events never published")
        return figures

    figures = await run.phase("relay lag", ["relay_p50", "relay_p99"], lag)
    if figures is not None:
        run.values["relay_p50"] = figures["p50_ms"]
        run.values["relay_p99"] = figures["p99_ms"]
        print(
            f"    {figures['sent']} events at {figures['offered_per_second']:g}/s:"
            f" P50 {figures['p50_ms']} ms, P99 {figures['p99_ms']} ms",
            flush=True,
        )


def order_of(rounds: int) -> list[str]:
    """off, on; with more rounds ABBA (off on on off ...), so drift hits both alike."""
    return [p for i in range(rounds) for p in ((OFF, ON) if i % 2 == 0 else (ON, OFF))]


async def run(plan: Plan, rounds: int) -> bool:
    host = machine()
    stamp = datetime.now(UTC)
    began = time.monotonic()
    runs: dict[str, list[StackRun]] = {OFF: [], ON: []}
    for profile in order_of(rounds):
        runs[profile].append(await measure_stack(profile, plan))
    figures = figures_of(plan)
    off = {f.key: mean_of([r.values for r in runs[OFF]], f.key) for f in figures}
    on = {f.key: mean_of([r.values for r in runs[ON]], f.key) for f in figures}
    lines = [cost_line(f, off[f.key], on[f.key]) for f in figures]
    table = benchmarks_table(figures, off, on)
    print()
    for line in lines:
        print(line)
    print("bench-trust: table for BENCHMARKS.md:")
    for row in table:
        print(row)
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / f"bench-trust-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "kind": "bench-trust",
        "started_at": stamp.isoformat(),
        "seconds": round(time.monotonic() - began, 1),
        "machine": host | {"loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "plan": asdict(plan),
        "order": order_of(rounds),
        "consumer_measured": "raw aiokafka consumer, commit per poll, no database",
        "off": off,
        "on": on,
        "runs": {
            profile: [
                {"values": r.values, "detail": r.detail, "errors": r.errors} for r in stack_runs
            ]
            for profile, stack_runs in runs.items()
        },
        "lines": lines,
        "benchmarks_table": table,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"bench-trust: report {path}")
    return all(v is not None for v in (*off.values(), *on.values()))


def main(
    quick: Annotated[bool, typer.Option(help="every phase, briefly (checks the bench)")] = False,
    rounds: Annotated[
        int, typer.Option(min=1, help="pairs of stacks: 1 is off then on; 2 is off on on off")
    ] = 1,
) -> None:
    measured = asyncio.run(run(QUICK if quick else FULL, rounds))
    raise typer.Exit(0 if measured else 1)


if __name__ == "__main__":
    typer.run(main)

"""One chaos run: the load, the fault schedule beside it, the audit, the figures, the report.

setup        the flash sale's SKU and the saga's catalog, buyers signed in and funded
measurement  one open loop at the profile's rate: the flash sale's arrivals, then the
             steady saga's, every order followed to its end; the fault schedule and
             the outbox sampler run beside it
audit        ops.audit, re-checked while the last events land
report       reports/chaos-<profile>-<timestamp>.json and .png, the per-fault table
             and the one line
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from devstack.stack import Stack
from loadgen.buyers import TokenCache, sign_in_buyers
from loadgen.calls import PLACE_ORDER_DEADLINE
from loadgen.driver import Recorder, SagaOutcome
from loadgen.prepare import Prepared, prepare_scenario
from loadgen.report import services_saw_line, write_json
from loadgen.runner import measure
from loadgen.scenarios import Arrival, new_run_id
from loadgen.services_saw import what_services_saw
from loadgen.settings import FLASH_SALE, STEADY_SAGA, ScenarioSettings
from loadgen.stats import all_rpc_figures, latency_figures
from loadgen.target import Target
from ops.audit import audit
from ops.table import render_table
from perf.chaos import figures as fig
from perf.chaos import plot
from perf.chaos.faults import Injector, Instances, RunClock
from perf.chaos.sampler import OutboxSampler
from perf.chaos.schedule import MIN_GAP, ChaosProfile
from services.order.domain import SAGA_TIMED_OUT
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS

Say = Callable[[str], None]
CONCURRENCY = 4096


@dataclass
class ChaosResult:
    report: dict[str, Any]
    json_path: Path
    png_path: Path
    line: str

    @property
    def ok(self) -> bool:
        return bool(self.report["ok"])


def _settings(profile: ChaosProfile, scenario: str, duration: float) -> ScenarioSettings:
    return ScenarioSettings(
        scenario,
        rate=profile.rate,
        duration=duration,
        users=profile.users,
        stock=profile.stock,
        concurrency=CONCURRENCY,
        settle=profile.settle,
        saga_deadline=profile.saga_deadline,
    )


async def _schedule(profile: ChaosProfile, injector: Injector) -> list[fig.FaultRecord]:
    """Each fault at its time, but never within MIN_GAP of the previous one's heal."""
    loop = asyncio.get_running_loop()
    done: list[fig.FaultRecord] = []
    for spec in profile.faults:
        earliest = spec.at if not done else max(spec.at, done[-1].healed + MIN_GAP)
        await asyncio.sleep(max(0.0, injector.clock.origin + earliest - loop.time()))
        done.append(await injector.run(spec))
    return done


async def _timed_out_in_db(dsn: str, since: datetime) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM orders WHERE status = 'cancelled'"
                " AND status_reason = $1 AND created_at >= $2",
                SAGA_TIMED_OUT,
                since,
            )
        )
    finally:
        await conn.close()


def _placing_after(healed: float, profile: ChaosProfile) -> float:
    """How long orders were still being placed after ``healed``: the window a recovery
    had to show in."""
    return round(max(0.0, profile.duration - healed), 1)


def _intended(flash_end: float) -> Callable[[SagaOutcome], bool]:
    def intended(o: SagaOutcome) -> bool:
        if o.start < flash_end:
            return o.state == "CONFIRMED" or fig.is_out_of_stock(o)
        return o.state == "CONFIRMED"

    return intended


async def run_chaos(
    profile: ChaosProfile,
    target: Target,
    stack: Stack,
    instances: Instances,
    reports_dir: Path,
    *,
    token_cache: TokenCache | None = None,
    say: Say = print,
) -> ChaosResult:
    started_at, run_id = datetime.now(UTC), new_run_id()
    say(f"chaos ({profile.name}): signing in {profile.users} buyers ...")
    buyers = await sign_in_buyers(target.clients, profile.users, token_cache)
    recorder = Recorder()
    phases: list[Prepared] = []
    for scenario, seconds, tag in (
        (FLASH_SALE, profile.flash_seconds, "f"),
        (STEADY_SAGA, profile.steady_seconds, "s"),
    ):
        phases.append(
            await prepare_scenario(
                _settings(profile, scenario, seconds),
                target,
                buyers,
                recorder,
                run_id=run_id + tag,  # the phases' idempotency keys must differ
                token_cache=token_cache,
                say=say,
            )
        )
    flash = phases[0]
    arrivals = [(p, a) for p in phases for a in p.plan]

    async def execute(pair: tuple[Prepared, Arrival], due: float) -> bool:
        return await pair[0].operations.execute(pair[1], due)

    etcd = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    sampler = OutboxSampler(target.audit_dsns)
    measured_since = datetime.now(UTC)

    async def faults(rec: Recorder) -> list[fig.FaultRecord]:
        injector = Injector(stack, instances, etcd, RunClock(rec.origin), say)
        return await _schedule(profile, injector)

    say(
        f"chaos ({profile.name}): {profile.rate:g} orders/s for {profile.duration:g}s "
        f"(flash sale {profile.flash_seconds:g}s of {profile.stock} units, then steady saga), "
        f"{len(profile.faults)} faults"
    )
    loop = asyncio.get_running_loop()
    sampler.start()
    try:
        result, records = await measure(
            profile.rate,
            CONCURRENCY,
            arrivals,
            execute,
            recorder,
            kind=lambda pair: pair[1].kind,
            drain_timeout=profile.saga_deadline + PLACE_ORDER_DEADLINE + 10.0,
            during=faults,
        )
    finally:
        await sampler.stop()
        await etcd.close()
    run_end = loop.time() - recorder.origin

    say(f"chaos ({profile.name}): audit (settles for up to {profile.settle:g}s) ...")
    audited = await audit(target.audit_dsns, settle=profile.settle)
    timed_out = await _timed_out_in_db(target.audit_dsns["order"], measured_since)

    document = build_report(
        profile, run_id, started_at, target, recorder, result.scheduled, records,
        sampler, flash, audited.as_dict(), timed_out, run_end,
    )  # fmt: skip
    if target.prometheus_url:
        document["services_saw"] = await asyncio.to_thread(
            what_services_saw,
            target.prometheus_url,
            started_at.timestamp(),
            datetime.now(UTC).timestamp(),
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = reports_dir / f"chaos-{profile.name}-{stamp}.json"
    png_path = json_path.with_suffix(".png")
    document["files"] = {"json": str(json_path), "png": str(png_path)}
    write_json(document, json_path)
    plot.timeline(png_path, document, recorder, sampler.samples, flash_end=profile.flash_seconds)
    rows = fig.fault_rows(records, document["recoveries"], profile.duration)
    for line in render_table(rows):
        say(line)
    say(f"report: {json_path} and {png_path.name}")
    for name, goal in document["goals"].items():
        if not goal["met"]:
            say(f"goal missed: {name} = {goal['value']} (goal {goal['goal']})")
    if "services_saw" in document:
        say(services_saw_line(document["services_saw"]))
    say(document["line"])
    return ChaosResult(document, json_path, png_path, document["line"])


def build_report(
    profile: ChaosProfile,
    run_id: str,
    started_at: datetime,
    target: Target,
    recorder: Recorder,
    scheduled: int,
    records: list[fig.FaultRecord],
    sampler: OutboxSampler,
    flash: Prepared,
    audit_report: dict[str, Any],
    timed_out_db: int,
    run_end: float,
) -> dict[str, Any]:
    flash_end = profile.flash_seconds
    sagas = recorder.sagas
    in_flash = [o for o in sagas if o.start < flash_end]
    confirmed = sum(1 for o in in_flash if o.state == "CONFIRMED")
    rejected_oos = sum(1 for o in in_flash if fig.is_out_of_stock(o))
    placed = recorder.calls.get("PlaceOrder", [])
    failed = sum(1 for c in placed if c.code != "OK") + recorder.dropped.get("PlaceOrder", 0)
    timed_out_seen = sum(1 for o in sagas if o.reason == SAGA_TIMED_OUT)
    intended = _intended(flash_end)
    recoveries = [fig.recovery_seconds(r.healed, sagas, intended) for r in records]
    figures = fig.Figures(
        faults=len(records),
        arrivals_failed_pct=fig.arrivals_failed_pct(scheduled, failed),
        timed_out=max(timed_out_db, timed_out_seen),
        confirmed=confirmed,
        stock=profile.stock,
        unsold_while_rejected=fig.unsold_while_rejected(profile.stock, confirmed, rejected_oos),
        recoveries=tuple(recoveries),
        audit_ok=bool(audit_report["ok"]),
        observed_after_last_heal=_placing_after(records[-1].healed, profile) if records else 0.0,
    )
    goals = fig.goals(figures, fault_errors=sum(1 for r in records if r.error))
    states: dict[str, int] = {}
    for o in sagas:
        states[o.state] = states.get(o.state, 0) + 1
    done = [o.latency for o in sagas if o.latency is not None]
    return {
        "kind": "chaos",
        "profile": profile.name,
        "run_id": run_id,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": asdict(replace(profile, faults=())) | {"min_gap_s": MIN_GAP},
        "target": {"name": target.name, "instances": target.instances()},
        "machine": {"cpus": os.cpu_count(), "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "faults": [
            asdict(r) | {"recovery_s": rec} for r, rec in zip(records, recoveries, strict=True)
        ],
        "recoveries": recoveries,
        # From the first arrival to the last order's end (the drain included).
        "measured_s": round(run_end, 3),
        "arrivals": {
            "scheduled": scheduled,
            "failed": failed,
            "failed_pct": figures.arrivals_failed_pct,
            "place_order_retries": recorder.retried.get("PlaceOrder", 0),
            "rpcs": all_rpc_figures(recorder.calls, recorder.dropped, profile.duration),
        },
        "sagas": {
            "orders": len(sagas),
            "states": dict(sorted(states.items())),
            "timed_out": figures.timed_out,
            "timed_out_seen_by_watch": timed_out_seen,
            "timed_out_in_db": timed_out_db,
            **latency_figures(done),
        },
        "flash_sale": {
            "sku": flash.catalog[0].sku,
            "stock": profile.stock,
            "arrivals": len(flash.plan),
            "confirmed": confirmed,
            "rejected_out_of_stock": rejected_oos,
            "unsold_while_rejected": figures.unsold_while_rejected,
        },
        "outbox_backlog_peak": sampler.peaks(),
        "audit": audit_report,
        "goals": goals,
        "ok": fig.passed(goals),
        "line": fig.chaos_line(figures),
    }

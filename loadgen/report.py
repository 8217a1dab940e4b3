"""The report of one scenario run: a JSON document, and the one-screen terminal summary."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadgen.calls import CHECK
from loadgen.driver import DriveResult
from loadgen.settings import ScenarioSettings
from loadgen.stats import latency_figures, ratios_to

# The performance goals of the issue, reported met or not; they do not fail a run.
GET_PRODUCT_THROUGHPUT_RATIO = 0.8
SAGA_ORDERS_PER_S = 100.0
SAGA_P95_MS = 300.0


def load_figures(result: DriveResult, settings: ScenarioSettings) -> dict[str, Any]:
    lag = latency_figures(result.lag)
    return {
        "scheduled": result.scheduled,
        "succeeded": result.succeeded,
        "failed": result.failed,
        "dropped": result.dropped,
        "unfinished": result.unfinished,
        "error_rate": round(result.error_rate, 6),
        "max_error_rate": settings.max_error_rate,
        "offered_rate": settings.rate,
        "elapsed_s": round(result.elapsed, 3),
        # How late the generator itself launched requests: if this is high, the
        # machine, not the server, limited the run.
        "generator_lag_ms": {k: lag[k] for k in ("p50_ms", "p99_ms", "max_ms")},
    }


def goals(
    rpcs: Mapping[str, Any],
    ratios: Mapping[str, Any],
    saga: Mapping[str, Any] | None,
    load: Mapping[str, Any],
) -> dict[str, Any]:
    """The performance goals (docs/performance.md); ``met`` is None where this load cannot
    tell."""
    found: dict[str, Any] = {}
    if "GetProduct" in ratios:
        value = ratios["GetProduct"]["qps"]
        figures = rpcs["GetProduct"]
        # While GetProduct keeps up with its offered load, the ratio is 1.0 whatever the
        # two capacities are: only a run past GetProduct's capacity compares them.
        saturated = figures["qps"] < 0.97 * figures["offered_qps"]
        found["get_product_throughput_vs_check"] = {
            "goal": f">= {GET_PRODUCT_THROUGHPUT_RATIO}",
            "value": value,
            "met": (value is not None and value >= GET_PRODUCT_THROUGHPUT_RATIO)
            if saturated
            else None,
            "note": "share of offered load served relative to the bare Check's, at the same "
            "rate; it compares capacities only past GetProduct's (profile browse-peak)",
        }
    if saga is not None and saga["orders"]:
        # The goal is a rate sustained: a run offering fewer orders cannot show it.
        tested = saga["offered_orders_per_s"] >= SAGA_ORDERS_PER_S
        note = "" if tested else f"offered {saga['offered_orders_per_s']:g} orders/s only"
        found["saga_orders_per_s"] = {
            "goal": f">= {SAGA_ORDERS_PER_S:g}",
            "value": saga["orders_per_s"],
            "met": saga["orders_per_s"] >= SAGA_ORDERS_PER_S if tested else None,
            "note": note,
        }
        found["saga_p95_ms"] = {
            "goal": f"<= {SAGA_P95_MS:g} at >= {SAGA_ORDERS_PER_S:g} orders/s",
            "value": saga["p95_ms"],
            "met": (saga["p95_ms"] is not None and saga["p95_ms"] <= SAGA_P95_MS)
            if tested
            else None,
            "note": note,
        }
    errors = load["failed"] + load["dropped"] + load["unfinished"]
    found["zero_errors"] = {
        "goal": "0 apart from intended rejections",
        "value": errors,
        "met": errors == 0,
    }
    return found


def build(
    *,
    profile: str,
    settings: ScenarioSettings,
    run_id: str,
    started_at: str,
    finished_at: str,
    target: Mapping[str, Any],
    machine: Mapping[str, Any],
    setup: Mapping[str, Any],
    baseline_rpcs: Mapping[str, Any],
    baseline_load: Mapping[str, Any],
    rpcs: Mapping[str, Any],
    saga: Mapping[str, Any] | None,
    load: Mapping[str, Any],
    audit: Mapping[str, Any],
) -> dict[str, Any]:
    baseline = dict(baseline_rpcs[CHECK]) | {
        "rpc": f"grpc.health.v1.{CHECK}",
        "load": baseline_load,
    }
    ratios = {name: ratios_to(baseline, figures) for name, figures in rpcs.items()}
    over_threshold = load["error_rate"] > settings.max_error_rate
    ok = bool(audit["ok"]) and not over_threshold
    return {
        "scenario": settings.scenario,
        "profile": profile,
        "run_id": run_id,
        "started_at": started_at,
        "finished_at": finished_at,
        "ok": ok,
        "verdict": {
            "audit_ok": bool(audit["ok"]),
            "error_rate": load["error_rate"],
            "max_error_rate": settings.max_error_rate,
            "error_rate_ok": not over_threshold,
        },
        "settings": settings.as_dict(),
        "target": dict(target),
        "machine": dict(machine),
        "setup": dict(setup),
        "load": dict(load),
        "baseline": baseline,
        "rpcs": dict(rpcs),
        "ratios": ratios,
        "saga": dict(saga) if saga is not None else None,
        "goals": goals(rpcs, ratios, saga, load),
        "audit": dict(audit),
    }


def write_json(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def _x(value: float | None) -> str:
    """A ratio in at most 6 characters."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _errors(figures: Mapping[str, Any]) -> str:
    parts = [f"{code}:{n}" for code, n in figures["errors"].items()]
    if figures.get("dropped"):
        parts.append(f"dropped:{figures['dropped']}")
    return " ".join(parts) or "-"


def services_saw_line(saw: Mapping[str, Any]) -> str:
    """What the services measured themselves (from Prometheus), in one line."""
    if "error" in saw:
        return f"services {saw['error']}"
    p95 = " ".join(
        f"{method} {_ms(ms)}" for method, ms in saw["server_p95_ms"].items() if ms is not None
    )
    backlog = max(saw["outbox_backlog_peak"].values(), default=0) or 0
    lag = max(saw["consumer_lag_peak"].values(), default=0) or 0
    return (
        f"services (Prometheus) server p95 ms: {p95 or '-'} · outbox backlog peak {backlog:.0f}"
        f" · consumer lag peak {lag:.0f}"
    )


def summary(report: Mapping[str, Any], json_path: Path, png_path: Path) -> str:
    s, load = report["settings"], report["load"]
    via = " via REST (gateway)" if s.get("via") == "rest" else ""
    head = (
        f"== {report['scenario']}{via} ({report['profile']}) · {s['rate']:g}/s for"
        f" {s['duration']:g}s"
        f" · cap {s['concurrency']} in flight · {s['users']} users · seed {s['seed']} "
    )
    lines = [head.ljust(100, "=")]
    lines.append(
        f"{'rpc':<20}{'count':>7}{'qps':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}"
        f" {'x qps':>6} {'x p50':>6} {'x p95':>6} {'x p99':>6}  errors"
    )

    def row(name: str, f: Mapping[str, Any], r: Mapping[str, Any] | None) -> str:
        ratio = (
            f" {_x(r['qps']):>6} {_x(r['p50']):>6} {_x(r['p95']):>6} {_x(r['p99']):>6}"
            if r
            else f"{'':>28}"
        )
        return (
            f"{name[:20]:<20}{f['count']:>7}{f['qps']:>8.1f}{_ms(f['p50_ms']):>8}"
            f"{_ms(f['p95_ms']):>8}{_ms(f['p99_ms']):>8}{_ms(f['max_ms']):>8}{ratio}  "
            f"{_errors(f)}"
        )

    bare = "healthz/live" if via else "Check"
    lines.append(row(f"{bare} (baseline)", report["baseline"], None))
    for name, figures in report["rpcs"].items():
        lines.append(row(name, figures, report["ratios"][name]))
    lines.append(
        f"ms; x: ratio to the baseline {bare} (for qps: of the share of offered load served)"
    )
    if (edge := report.get("edge")) is not None and edge["rate_limited"]:
        lines.append(
            f"edge  the gateway refused {edge['rate_limited']} requests (429): its rate limit,"
            " not the edge, was measured (docs/load-tests.md)"
        )
    saga = report["saga"]
    if saga and saga["orders"]:
        states = " · ".join(f"{k} {v}" for k, v in saga["terminal"].items())
        lines.append(
            f"saga  {saga['orders']} orders: {states} · place→terminal p50 {_ms(saga['p50_ms'])}"
            f" p95 {_ms(saga['p95_ms'])} p99 {_ms(saga['p99_ms'])} ms"
            f" · {saga['orders_per_s']:.1f} orders/s to terminal"
            f" (offered {saga['offered_orders_per_s']:.1f})"
        )
    lag = load["generator_lag_ms"]
    lines.append(
        f"load  {load['scheduled']} scheduled · {load['succeeded']} ok · {load['failed']} failed"
        f" · {load['dropped']} dropped · {load['unfinished']} unfinished"
        f" · error rate {load['error_rate']:.2%} (max {s['max_error_rate']:.2%})"
        f" · generator lag p99 {_ms(lag['p99_ms'])} ms"
    )
    verdicts = {True: "met", False: "NOT met", None: "not tested at this load"}
    goal_text = " · ".join(
        f"{name} {g['value']} ({verdicts[g['met']]}, goal {g['goal']})"
        for name, g in report["goals"].items()
        if name != "zero_errors"
    )
    if goal_text:
        lines.append(f"goals {goal_text}")
    if (saw := report.get("services_saw")) is not None:
        lines.append(services_saw_line(saw))
    audit = report["audit"]
    failed = [c["name"] for c in audit.get("checks", []) if not c["ok"]]
    lines.append(
        f"audit {'ok' if audit['ok'] else 'FAILED: ' + ', '.join(failed)}"
        f" ({len(audit.get('checks', []))} invariants, settle ≤ {s['settle']:g}s)"
    )
    lines.append(f"=> {'PASS' if report['ok'] else 'FAIL'} · {json_path} · {png_path}")
    return "\n".join(lines)

"""What the REST edge costs: the same scenario straight to the services and through the
gateway, compared from the two reports of one run.

A pair is two reports of one scenario with the same plan (rate, duration, seed, the one
buyer of the loadgen client) that differ only in ``via``. For each RPC both made
(GetProduct, PlaceOrder, WatchOrder) and for the saga (PlaceOrder to a terminal status):
throughput and P50/P95/P99 of each, the latency the edge adds (REST - gRPC, ms), and the
throughput ratio: REST's share of its offered load served over gRPC's (1.0 while both
keep up; below 1.0 when the edge, not the services, runs out of capacity). Several pairs
of one scenario (rounds) are averaged, figure by figure.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loadgen.settings import GRPC, REST

PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")
FIGURES = ("qps", "offered_qps", *PERCENTILES)
SAGA = "saga (place → terminal)"


def _key(report: Mapping[str, Any]) -> tuple[str, float, float, int]:
    s = report["settings"]
    return (s["scenario"], s["rate"], s["duration"], s["seed"])


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.mean(known), 3) if known else None


def _figures(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per RPC (and the saga) the figures compared."""
    found = {name: {k: f[k] for k in FIGURES} for name, f in report["rpcs"].items()}
    saga = report.get("saga")
    if saga and saga["orders"]:
        found[SAGA] = {
            "qps": saga["orders_per_s"],
            "offered_qps": saga["offered_orders_per_s"],
            **{k: saga[k] for k in PERCENTILES},
        }
    return found


def _share(f: Mapping[str, Any]) -> float | None:
    return f["qps"] / f["offered_qps"] if f.get("offered_qps") else None


def compare_pair(grpc: Mapping[str, Any], rest: Mapping[str, Any]) -> dict[str, Any]:
    """One scenario's figures over each edge, and the difference, RPC by RPC."""
    g, r = _figures(grpc), _figures(rest)
    rows: dict[str, Any] = {}
    for name in [n for n in g if n in r]:
        a, b = g[name], r[name]
        share_a, share_b = _share(a), _share(b)
        rows[name] = {
            GRPC: a,
            REST: b,
            "added_ms": {
                k: round(b[k] - a[k], 3) if a[k] is not None and b[k] is not None else None
                for k in PERCENTILES
            },
            "throughput_ratio": round(share_b / share_a, 3) if share_a and share_b else None,
        }
    return rows


def _average(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Figure by figure, the mean over rounds of one scenario's comparison."""
    names = [n for n in rounds[0] if all(n in r for r in rounds)]
    out: dict[str, Any] = {}
    for name in names:
        rows = [r[name] for r in rounds]
        out[name] = {
            side: {k: _mean(row[side][k] for row in rows) for k in FIGURES} for side in (GRPC, REST)
        }
        out[name]["added_ms"] = {k: _mean(row["added_ms"][k] for row in rows) for k in PERCENTILES}
        out[name]["throughput_ratio"] = _mean(row["throughput_ratio"] for row in rows)
    return out


def compare(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every scenario run both ways: its comparison (averaged over its pairs, in the order
    they ran), the pairs' files, and whether the gateway's rate limit refused anything."""
    sides: dict[tuple[str, float, float, int], dict[str, list[Mapping[str, Any]]]] = defaultdict(
        lambda: {GRPC: [], REST: []}
    )
    for report in reports:
        sides[_key(report)][report["settings"].get("via", GRPC)].append(report)
    scenarios: dict[str, Any] = {}
    for key, found in sides.items():
        pairs = list(zip(found[GRPC], found[REST], strict=False))
        if not pairs:
            continue
        name = key[0]
        scenarios[name] = {
            "rate": key[1],
            "duration": key[2],
            "pairs": len(pairs),
            "rpcs": _average([compare_pair(g, r) for g, r in pairs]),
            "files": [[g["files"]["json"], r["files"]["json"]] for g, r in pairs],
            "gateway_rate_limited": sum(r["edge"]["rate_limited"] for _, r in pairs),
            # The load generator's own CPU per arrival, each way (its HTTP client's cost).
            "generator_cpu_ms_per_arrival": {
                side: _mean(
                    r["load"].get("generator_cpu_ms_per_arrival") for r in found[side][: len(pairs)]
                )
                for side in (GRPC, REST)
            },
            "audit_ok": all(g["audit"]["ok"] and r["audit"]["ok"] for g, r in pairs),
        }
    return scenarios


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def lines(scenarios: Mapping[str, Any], prefix: str = "edge") -> list[str]:
    """One line per scenario and RPC: each edge's throughput and percentiles, the added
    latency and the throughput ratio."""
    out = []
    for name, found in scenarios.items():
        for rpc, row in found["rpcs"].items():
            g, r = row[GRPC], row[REST]
            added = "/".join(_signed(row["added_ms"][k]) for k in PERCENTILES)
            ratio = row["throughput_ratio"]
            out.append(
                f"{prefix}: {name} {rpc}: gRPC {_ms(g['qps'])}/s p50/p95/p99"
                f" {'/'.join(_ms(g[k]) for k in PERCENTILES)} ms · REST {_ms(r['qps'])}/s"
                f" {'/'.join(_ms(r[k]) for k in PERCENTILES)} ms · REST adds {added} ms"
                f" · throughput ratio {'-' if ratio is None else f'{ratio:.2f}'}"
            )
        cpu = found["generator_cpu_ms_per_arrival"]
        out.append(
            f"{prefix}: {name}: the load generator's own CPU per arrival: gRPC"
            f" {_ms(cpu[GRPC])} ms, REST {_ms(cpu[REST])} ms"
        )
        if found["gateway_rate_limited"]:
            out.append(
                f"{prefix}: {name}: the gateway refused {found['gateway_rate_limited']}"
                " requests (429): raise its limit, or these figures are the limit's"
            )
    return out


def write(document: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path

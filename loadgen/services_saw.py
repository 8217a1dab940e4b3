"""What the services themselves measured during a run, read from Prometheus: the load
harness and the chaos runner put it beside what their clients saw.

Server-side latency leaves out the network and the client's queueing; the outbox
backlog and the consumer lag show where events waited. Figures are over the run's
window; Prometheus scrapes every 5 s, so a shorter spike may be missed.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

STEP = "5s"


def _query(prometheus_url: str, expression: str, at: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expression, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{prometheus_url}api/v1/query?{query}", timeout=10) as reply:
        answer = json.load(reply)
    if answer.get("status") != "success":
        raise RuntimeError(str(answer.get("error", answer)))
    return list(answer["data"]["result"])


def _by(label: str, rows: list[dict[str, Any]], scale: float = 1.0) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    for row in rows:
        value = float(row["value"][1])
        name = row["metric"].get(label, "all")
        figures[name] = None if math.isnan(value) else round(value * scale, 3)
    return dict(sorted(figures.items()))


def what_services_saw(prometheus_url: str, start: float, end: float) -> dict[str, Any]:
    """Per-RPC server P95 (ms) and calls, saga P95 (ms) by end state, and the peaks of the
    outbox backlog (per service) and consumer lag (per group) over [start, end], in unix
    seconds. An unreachable Prometheus gives {"error": ...}, not an exception: a report
    is still worth writing without it."""
    window = f"{max(int(end - start), 10)}s"
    queries = {
        "server_p95_ms": (
            "histogram_quantile(0.95, sum by (le, grpc_method) (increase("
            f'grpc_server_handling_seconds_bucket{{grpc_service!~"grpc.*"}}[{window}])))',
            "grpc_method",
            1000.0,
        ),
        "server_calls": (
            f'sum by (grpc_method) (increase(grpc_server_handled_total{{grpc_service!~"grpc.*"}}'
            f"[{window}]))",
            "grpc_method",
            1.0,
        ),
        "server_errors": (
            "sum by (grpc_method) (increase(grpc_server_handled_total{"
            f'grpc_service!~"grpc.*",grpc_code!="OK"}}[{window}]))',
            "grpc_method",
            1.0,
        ),
        "saga_p95_ms": (
            "histogram_quantile(0.95, sum by (le, state) (increase("
            f"shop_saga_duration_seconds_bucket[{window}])))",
            "state",
            1000.0,
        ),
        "outbox_backlog_peak": (
            f"max by (service) (max_over_time(shop_outbox_backlog[{window}]))",
            "service",
            1.0,
        ),
        "outbox_oldest_age_peak_s": (
            f"max by (service) (max_over_time(shop_outbox_oldest_age_seconds[{window}]))",
            "service",
            1.0,
        ),
        "consumer_lag_peak": (
            f"max_over_time((sum by (group) (shop_consumer_lag))[{window}:{STEP}])",
            "group",
            1.0,
        ),
    }
    try:
        return {
            name: _by(label, _query(prometheus_url, expression, end), scale)
            for name, (expression, label, scale) in queries.items()
        } | {"source": prometheus_url, "window_s": round(end - start, 1)}
    except (OSError, urllib.error.URLError, RuntimeError, ValueError) as error:
        return {"error": f"Prometheus at {prometheus_url} not read: {error}"}

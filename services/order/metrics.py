"""The saga's metrics, which order exports: it alone sees an order reach its end.

Served by the kit's /metrics endpoint with the rest (shared/observability/metrics.py);
the recording rules over them are in infra/prometheus/rules.yml.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SAGA_ORDERS = Counter(
    "shop_saga_orders", "Orders that reached a terminal state, by state.", ["state"]
)
SAGA_SECONDS = Histogram(
    "shop_saga_duration_seconds",
    "Time from PlaceOrder to the order's terminal state.",
    ["state"],
    buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0),
)

"""The Prometheus metrics every service exports, and the port that serves them.

One definition of each metric of the kit, here, so the names the recording and alerting
rules use (infra/prometheus/rules.yml) are in one place; a service's own metrics (the
saga's, say) are declared in its own package. The instance's ``service`` and
``instance_id`` labels come from the scrape target (etcd), not from the metrics.
Counters carry Prometheus' ``_total`` suffix on the wire.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# RED per RPC, with the names of go-grpc-prometheus, which dashboards already know.
RPC_HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's arrival to its status.",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

OUTBOX_BACKLOG = Gauge("shop_outbox_backlog", "Outbox events not yet published.")
OUTBOX_OLDEST_AGE = Gauge(
    "shop_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event."
)
CONSUMER_LAG = Gauge(
    "shop_consumer_lag",
    "Records of an assigned partition not yet handled (high watermark - position).",
    ["group", "topic", "partition"],
)
DEAD_LETTERS = Counter(
    "shop_dead_letters", "Events sent to the dead-letter topic, by source topic.", ["topic"]
)
BREAKER_STATE = Gauge(
    "shop_breaker_state", "Circuit breaker per target: 0 closed, 1 half-open, 2 open.", ["target"]
)
RATE_LIMIT_REJECTIONS = Counter(
    "shop_rate_limit_rejections", "Calls refused by the rate limiter, by method.", ["method"]
)
CONFIG_REVISION = Gauge(
    "shop_config_revision", "The etcd revision of the config this instance applies."
)


class MetricsEndpoint:
    """Serves ``/metrics`` over plain HTTP on its own port, in a thread of its own, so a
    busy event loop still answers the scrape."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_port if self._server is not None else 0

    def start(self) -> int:
        self._server, self._thread = start_http_server(self._port, addr=self._host)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

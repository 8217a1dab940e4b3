"""The services' own figures in the load and chaos reports: Prometheus' answers read into
numbers, NaN as unknown, and an unreachable Prometheus as a note, not a crash."""

from __future__ import annotations

import socket

from loadgen.report import services_saw_line
from loadgen.services_saw import _by, what_services_saw


def test_rows_become_figures_by_label_with_nan_as_unknown() -> None:
    rows = [
        {"metric": {"grpc_method": "PlaceOrder"}, "value": [0, "0.0123"]},
        {"metric": {"grpc_method": "GetProduct"}, "value": [0, "NaN"]},
        {"metric": {}, "value": [0, "7"]},
    ]
    assert _by("grpc_method", rows, 1000.0) == {
        "GetProduct": None,
        "PlaceOrder": 12.3,
        "all": 7000.0,
    }


def test_an_unreachable_prometheus_is_reported_not_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    saw = what_services_saw(f"http://127.0.0.1:{port}/", 0.0, 60.0)
    assert "error" in saw and str(port) in saw["error"]
    assert services_saw_line(saw).startswith("services Prometheus at")


def test_the_report_line_names_server_p95s_and_the_peaks() -> None:
    saw = {
        "server_p95_ms": {"PlaceOrder": 41.5, "GetOrder": None},
        "outbox_backlog_peak": {"order": 12.0, "inventory": 3.0},
        "consumer_lag_peak": {"payment": 40.0},
    }
    assert services_saw_line(saw) == (
        "services (Prometheus) server p95 ms: PlaceOrder 41.5 · outbox backlog peak 12"
        " · consumer lag peak 40"
    )

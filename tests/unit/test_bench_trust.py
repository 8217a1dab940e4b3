"""`make bench-trust`: the plaintext baseline's plumbing and the report's arithmetic.

The baseline (profile bench-plain) must be the only stack without TLS and auth below
gRPC, and everything that connects to it must be told so; every other profile, and
every default, stays secure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.config import PROFILES
from devstack.etcd import Etcd
from devstack.kafka import Kafka
from devstack.launcher import SystemLauncher
from devstack.postgres import Postgres
from devstack.postgres_auth import hba, plaintext_hba
from devstack.stack import Stack
from perf.bench.trust_cost import (
    OFF,
    ON,
    Figure,
    Plan,
    benchmarks_table,
    cost_line,
    figures_of,
    mean_of,
    order_of,
)
from shared.messaging.kafka import KafkaIdentity
from shared.settings import ServiceSettings


def test_only_the_baseline_runs_without_infra_tls() -> None:
    assert [p.name for p in PROFILES.values() if not p.infra_tls] == [OFF]
    assert PROFILES[ON].infra_tls


def test_services_and_clients_default_to_tls() -> None:
    assert ServiceSettings().infra_tls
    identity = KafkaIdentity(Path("/nowhere"), "order")
    assert not identity.plaintext
    assert KafkaIdentity(Path("/nowhere"), "order", plaintext=True).client_options() == {
        "security_protocol": "PLAINTEXT"
    }


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_INFRA_TLS", "false")
    assert not ServiceSettings().infra_tls


def test_the_baseline_daemons_are_configured_plaintext() -> None:
    plain, secure = PROFILES[OFF], PROFILES[ON]
    assert Etcd(plain).peer_url.startswith("http://")
    assert Etcd(secure).peer_url.startswith("https://")
    plain_props = Kafka(plain)._properties(Path("/data"))
    assert "listeners=PLAINTEXT://" in plain_props
    assert "ssl." not in plain_props and "authorizer" not in plain_props
    secure_props = Kafka(secure)._properties(Path("/data"))
    assert "listeners=SSL://" in secure_props and "ssl.client.auth=required" in secure_props
    assert "StandardAuthorizer" in secure_props
    assert "hostssl" not in plaintext_hba("127.0.0.1")
    assert "trust" not in hba("127.0.0.1") and "hostnossl  all       all   all      reject" in hba(
        "127.0.0.1"
    )


def test_dsns_and_clients_follow_the_profile() -> None:
    assert Postgres(PROFILES[OFF]).service_dsn("order").endswith("?sslmode=disable")
    assert "sslmode=verify-full" in Postgres(PROFILES[ON]).service_dsn("order")
    plain, secure = Stack(OFF), Stack(ON)
    # The secure stack's operator is a certificate (read from files a fresh clone has not
    # made yet), the baseline's etcd client none.
    assert plain.etcd_operator() is None and secure.infra_tls and not plain.infra_tls
    assert plain.kafka_operator().plaintext and not secure.kafka_operator().plaintext


def test_the_launcher_tells_services_only_on_the_baseline() -> None:
    plain = SystemLauncher(Stack(OFF), Path("/jwt")).env_for("order", "order-1", 0)
    secure = SystemLauncher(Stack(ON), Path("/jwt")).env_for("order", "order-1", 0)
    assert plain["SHOP_ORDER_INFRA_TLS"] == "false"
    assert "SHOP_ORDER_INFRA_TLS" not in secure


def test_cost_line_reads_both_ways() -> None:
    latency = Figure("saga_p95_50", "saga P95 at 50 orders/s", "ms")
    line = cost_line(latency, 100.0, 125.0)
    assert "off 100.0 ms, on 125.0 ms, +25.0 ms (+25.0%, ratio 1.25; costlier" in line
    assert "no cost" in cost_line(latency, 100.0, 90.0)
    drain = Figure("drain_rps", "consumer drain", "records/s", higher_is_better=True)
    assert "costlier" in cost_line(drain, 10_000.0, 8_000.0)
    assert "no cost" in cost_line(drain, 10_000.0, 12_000.0)
    assert "NOT MEASURED" in cost_line(drain, None, 12_000.0)


def test_table_and_figures() -> None:
    figures = figures_of(Plan(saga_rates=(20, 50)))
    keys = [f.key for f in figures]
    assert keys == [
        "saga_p50_20",
        "saga_p95_20",
        "saga_p50_50",
        "saga_p95_50",
        "relay_p50",
        "relay_p99",
        "drain_rps",
    ]
    off = dict.fromkeys(keys, 10.0)
    on: dict[str, float | None] = dict.fromkeys(keys, 12.0)
    on["drain_rps"] = None
    rows = benchmarks_table(figures, dict(off), on)
    assert len(rows) == 2 + len(figures)
    assert rows[2] == "| saga P50 at 20 orders/s (ms) | 10.0 | 12.0 | +2.0 | 1.20 |"
    assert rows[-1].endswith("| 10.0 | — | — | — |")


def test_mean_and_order() -> None:
    assert mean_of([{"a": 1.0}, {"a": 2.0}], "a") == 1.5
    assert mean_of([{"a": 1.0}, {"a": None}], "a") is None
    assert order_of(1) == [OFF, ON]
    assert order_of(2) == [OFF, ON, ON, OFF]

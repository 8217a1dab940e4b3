"""Zipkin and Prometheus of the test stack: a span goes in and comes out, and Prometheus
scrapes exactly the instances registered in etcd, through the targets bridge."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import aetcd
import pytest
import pytest_asyncio

from devstack.stack import Stack
from shared.registry.etcd import etcd_client, instance_key
from shared.tls import ClientTLS

# The instance the test registers, with the labels it expects on the scraped series.
SERVICE = "product"
pytestmark = pytest.mark.integration
T = TypeVar("T")

# Bridge poll (2s) + file_sd pick-up + first scrape (5s interval), with room for a busy box.
TARGET_TIMEOUT = 20.0
LEASE_TTL = 30  # short: a test killed halfway leaves no scrape target behind for long


def http_json(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def wait_for(what: str, probe: Callable[[], T | None], timeout: float) -> tuple[T, float]:
    """Polls until probe returns something; returns it and the seconds it took."""
    started = time.monotonic()
    while True:
        found = probe()
        if found is not None:
            return found, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not after {timeout:.0f}s")
        time.sleep(0.25)


# --- Zipkin -------------------------------------------------------------------------------------


def test_zipkin_is_up_and_finds_a_posted_span(stack: Stack) -> None:
    assert stack.is_up("zipkin")
    status, health = http_json(f"http://{stack.zipkin.endpoint}/health")
    assert status == 200 and health["status"] == "UP", health

    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    span = {
        "traceId": trace_id,
        "id": span_id,
        "name": "probe",
        "kind": "SERVER",
        "timestamp": int(time.time() * 1_000_000),
        "duration": 1500,
        "localEndpoint": {"serviceName": "observability-test"},
        "tags": {"test": "test_observability_stack"},
    }
    status, _ = http_json(stack.zipkin.spans_url, [span])
    assert status == 202

    # The collector stores asynchronously: the trace shows up a moment later.
    def stored() -> list[dict[str, Any]] | None:
        status, spans = http_json(f"http://{stack.zipkin.endpoint}/api/v2/trace/{trace_id}")
        return spans if status == 200 and spans else None

    spans, _ = wait_for(f"trace {trace_id} in zipkin", stored, 10.0)
    assert [(s["id"], s["name"]) for s in spans] == [(span_id, "probe")]
    assert spans[0]["localEndpoint"]["serviceName"] == "observability-test"


def test_urls_and_env_point_at_the_profile_ports(stack: Stack) -> None:
    ports = stack.profile.ports
    assert stack.zipkin.spans_url == f"http://127.0.0.1:{ports.zipkin}/api/v2/spans"
    assert stack.zipkin.ui_url == f"http://127.0.0.1:{ports.zipkin}/zipkin/"
    assert stack.prometheus.url == f"http://127.0.0.1:{ports.prometheus}/"
    assert stack.env()["SHOP_TRACE_ENDPOINT"] == stack.zipkin.spans_url
    with urllib.request.urlopen(stack.zipkin.ui_url, timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(stack.prometheus.url, timeout=5) as resp:
        assert resp.status == 200
    names = {row.name: row for row in stack.status()}
    assert names["zipkin"].up and names["prometheus"].up


# --- Prometheus and the targets bridge ------------------------------------------------------------


class MetricsServer:
    """A stand-in service instance: /metrics with one metric, on a free port."""

    def __init__(self, metric: str) -> None:
        payload = f"# TYPE {metric} gauge\n{metric} 1\n".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metrics_server() -> Iterator[MetricsServer]:
    server = MetricsServer("shop_probe_test_up")
    yield server
    server.close()


@pytest_asyncio.fixture(loop_scope="session")
async def etcd(stack: Stack) -> AsyncIterator[aetcd.Client]:
    # A service's certificate: etcd lets only the product service write product's records.
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS(stack.tls_dir, SERVICE))
    yield client
    await client.close()


def active_target(stack: Stack, instance_id: str) -> dict[str, Any] | None:
    status, body = http_json(f"{stack.prometheus.url}api/v1/targets?state=active")
    assert status == 200, body
    for target in body["data"]["activeTargets"]:
        if target["labels"].get("instance_id") == instance_id:
            return dict(target)
    return None


async def test_prometheus_scrapes_an_instance_registered_in_etcd_until_it_goes(
    stack: Stack, etcd: aetcd.Client, metrics_server: MetricsServer
) -> None:
    assert stack.is_up("prometheus")
    instance_id = f"probe-{uuid.uuid4().hex[:8]}"
    key = instance_key(SERVICE, instance_id)
    lease = await etcd.lease(LEASE_TTL)
    record = {
        "address": "127.0.0.1:1",
        "version": "test",
        "started_at": "2025-01-01T00:00:00+00:00",
        "metrics": metrics_server.address,
    }
    await etcd.put(key.encode(), json.dumps(record).encode(), lease=lease)
    try:

        def scraped_up() -> dict[str, Any] | None:
            target = active_target(stack, instance_id)
            return target if target is not None and target["health"] == "up" else None

        target, took = await asyncio.to_thread(
            wait_for, f"{key} scraped up", scraped_up, TARGET_TIMEOUT
        )
        print(f"target up {took:.1f}s after the key was put")
        assert target["labels"]["service"] == SERVICE
        assert target["labels"]["job"] == "shop"
        assert target["scrapeUrl"] == f"http://{metrics_server.address}/metrics"

        # The scraped series carry the labels from etcd, which is what the rules group by.
        query = urllib.parse.quote(f'shop_probe_test_up{{instance_id="{instance_id}"}}')

        def sample() -> list[dict[str, Any]] | None:
            status, body = http_json(f"{stack.prometheus.url}api/v1/query?query={query}")
            return (body["data"]["result"] or None) if status == 200 else None

        result, _ = await asyncio.to_thread(wait_for, "the scraped sample", sample, 10.0)
        assert result[0]["metric"]["service"] == SERVICE
        assert result[0]["value"][1] == "1"
    finally:
        await etcd.delete(key.encode())
        await lease.revoke()

    def gone() -> bool | None:
        in_file = instance_id in stack.prometheus.targets_file.read_text()
        return True if not in_file and active_target(stack, instance_id) is None else None

    _, took = await asyncio.to_thread(wait_for, f"{key} dropped", gone, TARGET_TIMEOUT)
    print(f"target gone {took:.1f}s after the key was deleted")

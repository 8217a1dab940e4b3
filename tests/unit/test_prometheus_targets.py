"""The targets bridge: registry key/values to file_sd groups, and its polling against a fake
etcd gateway (the real etcd is in tests/integration/test_observability_stack.py)."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devstack.prometheus_targets import TargetsWriter, file_sd_groups, parse_key, render


def value(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def group(target: str, service: str, instance_id: str) -> dict[str, Any]:
    return {"targets": [target], "labels": {"service": service, "instance_id": instance_id}}


def test_one_group_per_instance_with_metrics_sorted_by_service_and_id() -> None:
    kvs = [
        ("/services/user/u-2", value(address="127.0.0.1:2", metrics="127.0.0.1:9002")),
        ("/services/order/o-1", value(address="127.0.0.1:3", metrics="127.0.0.1:9003")),
        ("/services/user/u-1", value(address="127.0.0.1:1", metrics="127.0.0.1:9001")),
    ]
    assert file_sd_groups(kvs) == [
        group("127.0.0.1:9003", "order", "o-1"),
        group("127.0.0.1:9001", "user", "u-1"),
        group("127.0.0.1:9002", "user", "u-2"),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        value(address="127.0.0.1:1", version="0.1.0"),  # older instance: no metrics field
        value(address="127.0.0.1:1", metrics=""),
        value(address="127.0.0.1:1", metrics="  "),
        value(address="127.0.0.1:1", metrics=None),
        value(address="127.0.0.1:1", metrics=9001),
        b"{not json",
        b"\xff\xfe",
        b"",
        b'["127.0.0.1:9001"]',
        b'"127.0.0.1:9001"',
    ],
)
def test_skips_instances_without_a_usable_metrics_address(raw: bytes) -> None:
    kvs = [("/services/user/u-1", raw), ("/services/user/u-2", value(metrics="127.0.0.1:9002"))]
    assert file_sd_groups(kvs) == [group("127.0.0.1:9002", "user", "u-2")]


@pytest.mark.parametrize(
    "key",
    [
        "/services/user",
        "/services/user/",
        "/services//u-1",
        "/services/user/u-1/extra",
        "/services/",
        "/config/user/u-1",
        "services/user/u-1",
    ],
)
def test_skips_keys_not_of_the_form_services_service_id(key: str) -> None:
    assert parse_key(key) is None
    assert file_sd_groups([(key, value(metrics="127.0.0.1:9001"))]) == []


def test_parse_key() -> None:
    assert parse_key("/services/order/order-1-3f2a") == ("order", "order-1-3f2a")


def test_render_is_stable_json() -> None:
    groups = [group("127.0.0.1:9001", "user", "u-1")]
    assert render(groups) == render(json.loads(render(groups)))
    assert render([]) == "[]\n"


# --- polling against a fake v3 gateway ------------------------------------------------------------


class FakeGateway:
    """Answers POST /v3/kv/range like etcd's gateway, from a dict; records the requests."""

    def __init__(self) -> None:
        self.kvs: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                gateway.requests.append({"path": self.path, **body})
                kvs = [
                    {"key": _b64(k.encode()), "value": _b64(v)}
                    for k, v in sorted(gateway.kvs.items())
                ]
                # Like the real gateway: empty fields are left out.
                payload = json.dumps({"header": {}, **({"kvs": kvs} if kvs else {})}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    yield fake
    fake.close()


def test_polls_the_services_prefix_and_writes_only_on_change(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    out = tmp_path / "targets.json"
    writer = TargetsWriter(gateway.endpoint, out)

    assert writer.poll()  # first poll: nothing registered is still a file, an empty one
    assert json.loads(out.read_text()) == []
    request = gateway.requests[0]
    assert request["path"] == "/v3/kv/range"
    assert base64.b64decode(request["key"]) == b"/services/"
    assert base64.b64decode(request["range_end"]) == b"/services0"  # every key under the prefix

    gateway.kvs["/services/user/u-1"] = value(address="127.0.0.1:1", metrics="127.0.0.1:9001")
    assert writer.poll()
    assert json.loads(out.read_text()) == [group("127.0.0.1:9001", "user", "u-1")]
    inode = out.stat().st_ino

    assert not writer.poll()  # unchanged: not rewritten
    assert out.stat().st_ino == inode

    del gateway.kvs["/services/user/u-1"]
    assert writer.poll()
    assert json.loads(out.read_text()) == []
    assert list(tmp_path.iterdir()) == [out]  # no temp file left behind


def test_an_unchanged_file_from_an_earlier_run_is_not_rewritten(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.kvs["/services/user/u-1"] = value(metrics="127.0.0.1:9001")
    out = tmp_path / "targets.json"
    assert TargetsWriter(gateway.endpoint, out).poll()
    assert not TargetsWriter(gateway.endpoint, out).poll()


def test_keeps_the_last_file_while_etcd_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{sock.getsockname()[1]}"
    out = tmp_path / "targets.json"
    last = render([group("127.0.0.1:9001", "user", "u-1")])
    out.write_text(last)

    writer = TargetsWriter(endpoint, out)
    assert not writer.poll()
    assert not writer.poll()
    assert out.read_text() == last

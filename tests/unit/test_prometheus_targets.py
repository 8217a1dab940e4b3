"""The targets bridge: registry key/values to file_sd groups, and its polling of a fake
registry (the real etcd is in tests/integration/test_observability_stack.py)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from devstack.prometheus_targets import (
    KeyValues,
    RegistryReader,
    TargetsWriter,
    file_sd_groups,
    parse_key,
    render,
)
from pki.authority import ensure_authority
from pki.identities import PROMETHEUS_TARGETS


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


def test_the_gateway_is_scraped_like_a_service() -> None:
    """It registers /services/gateway/<id> with its metrics (and HTTP) address, under the
    role that lets it write there (ops/trust/rights.py): its series carry service=gateway."""
    kvs = [
        (
            "/services/gateway/gateway-1-ab12",
            value(http="127.0.0.1:8080", metrics="127.0.0.1:9080"),
        ),
        ("/services/user/u-1", value(address="127.0.0.1:1", metrics="127.0.0.1:9001")),
    ]
    assert file_sd_groups(kvs) == [
        group("127.0.0.1:9080", "gateway", "gateway-1-ab12"),
        group("127.0.0.1:9001", "user", "u-1"),
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


# --- polling a fake registry ------------------------------------------------------------------


class FakeRegistry:
    """The registry's key/values from a dict; counts the reads."""

    def __init__(self) -> None:
        self.kvs: dict[str, bytes] = {}
        self.reads = 0

    async def __call__(self) -> KeyValues:
        self.reads += 1
        return sorted(self.kvs.items())


async def test_polls_the_registry_and_writes_only_on_change(tmp_path: Path) -> None:
    registry = FakeRegistry()
    out = tmp_path / "targets.json"
    writer = TargetsWriter(registry, out)

    assert await writer.poll()  # first poll: nothing registered is still a file, an empty one
    assert json.loads(out.read_text()) == []

    registry.kvs["/services/user/u-1"] = value(address="127.0.0.1:1", metrics="127.0.0.1:9001")
    assert await writer.poll()
    assert json.loads(out.read_text()) == [group("127.0.0.1:9001", "user", "u-1")]
    inode = out.stat().st_ino

    assert not await writer.poll()  # unchanged: not rewritten
    assert out.stat().st_ino == inode

    del registry.kvs["/services/user/u-1"]
    assert await writer.poll()
    assert json.loads(out.read_text()) == []
    assert os.listdir(tmp_path) == [out.name]  # no temp file left behind
    assert registry.reads == 4


async def test_an_unchanged_file_from_an_earlier_run_is_not_rewritten(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.kvs["/services/user/u-1"] = value(metrics="127.0.0.1:9001")
    out = tmp_path / "targets.json"
    assert await TargetsWriter(registry, out).poll()
    assert not await TargetsWriter(registry, out).poll()


@pytest.mark.parametrize("certificates", [True, False], ids=["unreachable", "no-certificate"])
async def test_keeps_the_last_file_while_etcd_is_unreachable(
    tmp_path: Path, certificates: bool
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{sock.getsockname()[1]}"
    tls_dir = tmp_path / "tls"
    if certificates:
        ensure_authority(tls_dir, [PROMETHEUS_TARGETS])
    out = tmp_path / "targets.json"
    last = render([group("127.0.0.1:9001", "user", "u-1")])
    out.write_text(last)

    reader = RegistryReader(endpoint, tls_dir)
    writer = TargetsWriter(reader, out)
    try:
        assert not await writer.poll()
        assert not await writer.poll()
    finally:
        await reader.close()
    assert out.read_text() == last

"""The operator's tools default to `make run`'s stack without importing devstack (ops sits
below it); the addresses they assume are the dev profile's."""

from __future__ import annotations

from devstack.stack import Stack
from ops import shopctl
from shared.settings import DEV_TLS_DIR


def test_shopctl_defaults_are_the_dev_stacks() -> None:
    dev = Stack("dev")
    assert f"{shopctl.DEV_ZIPKIN}/api/v2/spans" == dev.zipkin.spans_url
    assert f"{shopctl.DEV_ZIPKIN}/zipkin/" == dev.zipkin.ui_url
    assert dev.profile.logs_dir == shopctl.DEV_LOGS_DIR
    assert dev.tls_dir == DEV_TLS_DIR
    assert dev.etcd_endpoint == "127.0.0.1:12379"

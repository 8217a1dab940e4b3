"""Opening an aetcd client from a host:port endpoint."""

from __future__ import annotations

import aetcd

PREFIX = "/services/"


def service_prefix(service: str) -> str:
    return f"{PREFIX}{service}/"


def instance_key(service: str, instance_id: str) -> str:
    return f"{PREFIX}{service}/{instance_id}"


def etcd_client(endpoint: str, timeout: float = 5.0) -> aetcd.Client:
    host, _, port = endpoint.rpartition(":")
    # aetcd's timeout is per RPC; without one a call to a dead etcd hangs forever.
    return aetcd.Client(host=host or "127.0.0.1", port=int(port), timeout=timeout)

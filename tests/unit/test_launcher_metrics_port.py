"""make run's metrics ports: the gRPC port + 1000, or a free one while that port is held
(the fixed ports lie in Linux's ephemeral range, where an outgoing connection may sit).
The service itself binds what it is given and fails loudly otherwise: in Kubernetes,
Prometheus scrapes the port the manifests name."""

from __future__ import annotations

import socket

from devstack.launcher import METRICS_PORT_OFFSET, bindable, metrics_port_for


def test_a_held_metrics_port_gives_way_to_a_free_one_and_comes_back_when_free() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        assert not bindable(busy)
        assert metrics_port_for(busy - METRICS_PORT_OFFSET) == 0  # a free one, in etcd
    assert bindable(busy)
    assert metrics_port_for(busy - METRICS_PORT_OFFSET) == busy

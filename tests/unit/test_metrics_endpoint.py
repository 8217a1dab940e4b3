"""The /metrics endpoint takes another port when its fixed one is held (make run's
metrics ports lie in Linux's ephemeral range, where an outgoing connection may sit)."""

from __future__ import annotations

import socket
import urllib.request

from shared.observability.metrics import MetricsEndpoint


def test_a_busy_fixed_port_falls_back_to_a_free_one_that_serves() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        endpoint = MetricsEndpoint("127.0.0.1", busy)
        try:
            port = endpoint.start()
            assert port not in (0, busy)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                assert b"grpc_server_handled" in reply.read()
        finally:
            endpoint.stop()

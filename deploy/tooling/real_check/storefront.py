"""The storefront in a real browser against the cluster, the way `make up` tells a person
to open it: `kubectl port-forward svc/gateway 8080:8080`, then http://localhost:8080/.

The port is the issuer's (the authorization server builds its absolute URLs from it), so
it must be this one; a port already taken is a clear failure, not a silent other target.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from deploy.tooling import k8s
from deploy.tooling.browser_journey import run_journey
from ops.seed import CUSTOMER

PORT = 8080
BASE = f"http://localhost:{PORT}"


class StorefrontFailed(RuntimeError):
    pass


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def port_forward(kubectl: k8s.Kubectl, timeout: float = 60) -> Iterator[None]:
    if _port_taken(PORT):
        raise StorefrontFailed(
            f"port {PORT} is taken here (a `make run` gateway?): the storefront's issuer is"
            f" {BASE}, so the port-forward needs it"
        )
    argv = ["kubectl", "--context", kubectl.context, "-n", k8s.NAMESPACE, "port-forward",
            "svc/gateway", f"{PORT}:{PORT}"]  # fmt: skip
    forward = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if forward.poll() is not None:
                error = forward.stderr.read().decode() if forward.stderr else ""
                raise StorefrontFailed(f"kubectl port-forward ended: {error.strip()}")
            try:
                with urllib.request.urlopen(f"{BASE}/healthz/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StorefrontFailed(
                    f"the gateway did not answer through the port-forward in {timeout:.0f}s"
                )
            time.sleep(1)
        yield
    finally:
        forward.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            forward.wait(timeout=10)
        if forward.poll() is None:
            forward.kill()


def check_storefront(kubectl: k8s.Kubectl, reports: Path) -> str:
    with port_forward(kubectl):
        order_id = asyncio.run(run_journey(BASE, *CUSTOMER, reports, prefix="k8s-storefront-"))
    return (
        f"a browser through `kubectl port-forward svc/gateway`: signed in, bought, order"
        f" {order_id[:8]} CONFIRMED live, signed out; reports/k8s-storefront-*.png"
    )

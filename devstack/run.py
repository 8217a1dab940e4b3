"""`make run`: the whole system on this machine, in the foreground.

Brings up PostgreSQL, etcd and Kafka (dev profile), applies every service's
migrations, writes the config center's default documents where none is set,
starts ``--replicas`` instances of each service (supervised: one that crashes is
restarted), waits until all are registered and SERVING, then the gateway (the
storefront, on http://localhost:8080/) until it is ready, seeds the demo data,
prints where everything is, then streams the logs until Ctrl-C or SIGTERM, and
stops it all in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from devstack.launcher import SERVICES, SystemLauncher, gateway_available, open_directory
from devstack.stack import Stack
from ops.config_admin import load_defaults, seed_defaults
from ops.seed import ADMIN, CUSTOMER, seed
from ops.table import render_table
from services.inventory.main import SERVICE as INVENTORY
from services.order.main import SERVICE as ORDER
from services.payment.main import SERVICE as PAYMENT
from services.product.main import SERVICE as PRODUCT
from services.user.main import SERVICE as USER
from shared.auth.keys import generate_keypair
from shared.logs import configure_logging
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.rpc.client import ServiceClients
from shared.service import ServiceDefinition
from shared.tls import GATEWAY, ClientTLS

DEFINITIONS: list[ServiceDefinition[Any]] = [USER, PRODUCT, INVENTORY, PAYMENT, ORDER]
# Replica i listens on the service's port + 100 * i: ten stays clear of the next block.
MAX_REPLICAS = 9


class AlreadyRunning(RuntimeError):
    pass


def claim_run_lock(path: Path) -> None:
    """One `make run` per checkout: a second one would fight over ports and data."""
    if path.exists():
        with contextlib.suppress(ValueError):
            pid = int(path.read_text().strip())
            if Path(f"/proc/{pid}").exists() and pid != os.getpid():
                raise AlreadyRunning(
                    f"`make run` is already running (pid {pid}); use that one, or stop it with "
                    f"Ctrl-C in its terminal (or `kill {pid}`) before starting another."
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpid()))


def replica_counts(replicas: int) -> dict[str, int]:
    return {service: replicas for service in SERVICES}


def replicas_argument(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(
            f"REPLICAS must be a whole number from 1 to {MAX_REPLICAS}, not {text!r}"
        )
    return int(text)


def launcher_for(
    stack: Stack, jwt_dir: Path, replicas: int, gateway: bool = True
) -> SystemLauncher:
    """What `make run REPLICAS=n` starts: n supervised instances of each service, and the
    gateway (one, supervised too) on http://localhost:8080."""
    return SystemLauncher(
        stack,
        jwt_dir,
        replicas=replica_counts(replicas),
        fixed_ports=True,
        supervise=True,
        gateway=gateway,
    )


def storefront_line(launcher: SystemLauncher) -> str:
    """Where to open the storefront, and whom to log in as (ops/seed.py's accounts)."""
    return (
        f"Storefront: {launcher.public_url}/  (demo customer {CUSTOMER[0]} / {CUSTOMER[1]},"
        f" admin {ADMIN[0]} / {ADMIN[1]})"
    )


# The table's rows: the services in the launcher's order, then the gateway.
ROWS_ORDER = (*SERVICES, GATEWAY)


def table_rows(
    stack: Stack, launcher: SystemLauncher, directory: ServiceDirectory
) -> list[tuple[str, ...]]:
    """One row per instance the launcher runs (the gateway last), then the infrastructure."""
    registered = {i.instance_id: i for s in ROWS_ORDER for i in directory.instances(s)}
    rows: list[tuple[str, ...]] = [("SERVICE", "INSTANCE", "PID", "ADDRESS", "LEASE", "METRICS")]
    for child in sorted(launcher.processes, key=lambda c: (ROWS_ORDER.index(c.service), c.index)):
        instance = registered.get(child.instance_id)
        address = instance.address if instance else f"127.0.0.1:{child.port}"
        if child.service == GATEWAY:  # what a browser opens, not a gRPC address
            address = f"{launcher.public_url}/"
        lease = f"{instance.lease_id:x}" if instance else "-"
        metrics = f"http://{instance.metrics}/metrics" if instance and instance.metrics else "-"
        pid = str(child.process.pid)
        rows.append((child.service, child.instance_id, pid, address, lease, metrics))
    rows.append(("postgresql", "-", "-", stack.postgres.endpoint, "-", "-"))
    rows.append(("etcd", "-", "-", stack.etcd_endpoint, "-", "-"))
    rows.append(("kafka", "-", "-", stack.kafka_bootstrap, "-", "-"))
    rows.append(("zipkin (traces)", "-", "-", stack.zipkin.ui_url, "-", "-"))
    rows.append(("prometheus", "-", "-", stack.prometheus.url, "-", "-"))
    return rows


def print_table(stack: Stack, launcher: SystemLauncher, directory: ServiceDirectory) -> None:
    for line in render_table(table_rows(stack, launcher, directory)):
        print(line, flush=True)


async def run(replicas: int = 1, gateway: bool = True) -> int:
    started = time.monotonic()
    stack = Stack("dev")
    lock = stack.profile_dir / "run.pid"
    claim_run_lock(lock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    launcher: SystemLauncher | None = None
    try:
        print("starting PostgreSQL, etcd and Kafka ...", flush=True)
        await asyncio.to_thread(stack.up)
        # The user service's bootstrap signing key, imported on its first start; it then
        # keeps its keys in its database and publishes the public ones (JWKS) in etcd.
        jwt_dir = stack.profile_dir / "jwt"
        generate_keypair(jwt_dir)
        for definition in DEFINITIONS:
            settings = definition.settings_type(pg_dsn=stack.pg_service_dsn(definition.name))
            await definition.migrate(settings)
        # The config center's default documents, where no one has set any (never over them).
        etcd = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
        try:
            outcome = await seed_defaults(etcd, load_defaults())
        finally:
            await etcd.close()
        print("config: " + ", ".join(f"{s} {what}" for s, what in outcome.items()), flush=True)
        if gateway and not gateway_available():
            print("no gateway/ here (python -m gateway): the storefront is not started", flush=True)
            gateway = False
        launcher = launcher_for(stack, jwt_dir, replicas, gateway)
        async with open_directory(stack) as directory:
            await launcher.start_all()
            await launcher.wait_ready(directory, timeout=90)
            clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
            try:
                await seed(clients, stack.pg_service_dsn("user"))
            finally:
                await clients.close()
            print_table(stack, launcher, directory)
            count = sum(len(directory.instances(s)) for s in SERVICES)
            print(
                f"ready: {count} instances of {len(SERVICES)} services registered"
                f"{' and the gateway ready' if gateway else ''} "
                f"({time.monotonic() - started:.1f}s); crashed instances are restarted; "
                "Ctrl-C stops everything",
                flush=True,
            )
            if gateway:
                print(storefront_line(launcher), flush=True)
            await stop.wait()
        print("stopping the gateway and the services ...", flush=True)
        await launcher.stop_all()
        launcher = None
        print("stopping PostgreSQL, etcd and Kafka ...", flush=True)
        await asyncio.to_thread(stack.down)
        print("stopped", flush=True)
        return 0
    finally:
        if launcher is not None:
            await launcher.stop_all()
        lock.unlink(missing_ok=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devstack.run", description=__doc__)
    parser.add_argument(
        "--replicas",
        type=replicas_argument,
        default=1,
        help=f"instances of each service, 1-{MAX_REPLICAS} (make run REPLICAS=n)",
    )
    parser.add_argument(
        "--gateway",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the gateway, the storefront on http://localhost:8080/ (make run GATEWAY=0:"
        " --no-gateway)",
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    configure_logging(os.environ.get("SHOP_LOG_LEVEL", "WARNING"))
    try:
        sys.exit(asyncio.run(run(args.replicas, args.gateway)))
    except AlreadyRunning as error:
        print(error, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The images `make image` builds: the five services as containers on the test stack.

The containers run as a pod would: read-only root, no capabilities, the image's
non-root user, secrets mounted read-only, and the host's network to reach the test
stack's PostgreSQL, etcd and Kafka. They must register, answer SERVING, carry an order
to CONFIRMED and, on SIGTERM, revoke their leases before they drain and exit.

The seed, smoke and load Jobs and the shopctl pod run here too, each from the image, with
the command and the environment its rendered manifest gives, the cluster's addresses
swapped for the test stack's: what `make up` and `make load-k8s` run in the cluster, run
here. And each image carries what it runs and nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_asyncio

from deploy.tooling.image import IMAGE, LOADGEN_IMAGE, OPS_IMAGE, STAGES
from deploy.tooling.k8s_check import objects, rendered
from devstack.containers import ContainerRun, Engine
from devstack.launcher import SERVICES, SystemLauncher, open_directory, wipe_system_data
from devstack.stack import Stack
from ops.config_admin import SCOPES, load_defaults
from ops.smoke import place_demo_order
from ops.trust.postgres_roles import read_password
from shared.config import store
from shared.config.center import config_key
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS
from shop.order.v1 import order_pb2
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e

# Long enough that a key gone right after the stop can only have been revoked.
LEASE_TTL = 30
IMAGE_REF = f"{IMAGE}:dev"


@dataclass
class Containers:
    stack: Stack
    run: ContainerRun
    launcher: SystemLauncher
    directory: ServiceDirectory
    clients: ServiceClients
    logs: list[str]


def manifest_container(kind: str, name: str) -> dict[str, Any]:
    for o in objects(rendered()["kind"]):
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return dict(o["spec"]["template"]["spec"]["containers"][0])
    raise AssertionError(f"no {kind}/{name} in the rendered manifests")


def on_test_stack(container: Mapping[str, Any], stack: Stack) -> dict[str, str]:
    """The container's literal env, with the cluster's addresses replaced by the stack's."""
    env = {}
    for entry in container.get("env", []):
        name, value = entry["name"], entry.get("value")
        if value is None:  # from the downward API or a Secret: the stack needs neither
            continue
        if name.endswith("_ETCD_ENDPOINT"):
            value = stack.etcd_endpoint
        elif name.endswith("_PG_DSN"):
            # The same role and TLS options (its ca.pem is mounted where the pod has it),
            # with the stack's address and that role's password.
            parts = urlsplit(value)
            role = parts.username or ""
            password = read_password(stack.postgres.passwords_dir, role)
            netloc = f"{role}:{password}@127.0.0.1:{stack.postgres.port}"
            value = urlunsplit(parts._replace(netloc=netloc))
        env[name] = value
    return env


def run_like(
    c: Containers,
    kind: str,
    name: str,
    extra_env: Mapping[str, str] | None = None,
    volumes: Mapping[Path, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    container = manifest_container(kind, name)
    env = {**on_test_stack(container, c.stack), **(extra_env or {})}
    # From the image the manifest names, as `make image` tagged it.
    run = dataclasses.replace(c.run, image=container["image"])
    argv = run.argv(f"test-{name}", env, container["command"], volumes)
    return subprocess.run(
        argv, env=c.run.engine.env, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine.detect()
    for image in STAGES:
        assert engine.has_image(f"{image}:dev"), f"{image}:dev is missing: `make image` builds it"
    return engine


def importable(engine: Engine, image: str, modules: list[str]) -> dict[str, bool]:
    """Which of ``modules`` the image can import (no network, as its own user)."""
    probe = (
        "import importlib.util, json, sys\n"
        "def found(m):\n"
        "    try:\n"
        "        return importlib.util.find_spec(m) is not None\n"
        "    except ModuleNotFoundError:  # its parent package is not there either\n"
        "        return False\n"
        "print(json.dumps({m: found(m) for m in sys.argv[1:]}))"
    )
    ran = engine.run(
        "run", "--rm", "--network=none", f"{image}:dev", "python", "-c", probe, *modules,
        capture=True,
    )  # fmt: skip
    return dict(json.loads(ran.stdout))


APART = ["devstack", "tests", "perf", "demos", "deploy.tooling", "matplotlib", "numpy"]


def test_the_services_image_holds_the_services_and_no_tool(engine: Engine) -> None:
    wanted = ["services.order.main", "gateway", "shared", "shop", "ops", "loadgen"]
    found = importable(engine, IMAGE, wanted)
    assert found == {"services.order.main": True, "gateway": True, "shared": True, "shop": True} | {
        "ops": False,
        "loadgen": False,
    }
    assert not any(importable(engine, IMAGE, APART).values())


def test_the_ops_image_holds_the_jobs_tools(engine: Engine) -> None:
    tools = ["ops.shopctl", "ops.seed", "ops.smoke", "ops.config_admin", "ops.trust.__main__"]
    assert all(importable(engine, OPS_IMAGE, tools).values())
    assert not any(importable(engine, OPS_IMAGE, ["loadgen", *APART]).values())


def test_the_load_generators_image_holds_it_and_its_group(engine: Engine) -> None:
    wanted = ["loadgen.__main__", "loadgen.plot", "matplotlib", "numpy"]
    assert all(importable(engine, LOADGEN_IMAGE, wanted).values())
    apart = [m for m in APART if m not in ("matplotlib", "numpy")]
    assert not any(importable(engine, LOADGEN_IMAGE, apart).values())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def containers(
    stack: Stack, keys: TestKeys, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Containers]:
    await wipe_system_data(stack)
    work = tmp_path_factory.mktemp("container-secrets")
    # The directory must be searchable by the image's user, as a Secret volume would be.
    for parent in [work, *work.parents]:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    run = ContainerRun.prepare(engine, IMAGE_REF, stack.tls_dir, keys.directory, work)
    logs: list[str] = []
    launcher = SystemLauncher(
        stack,
        keys.directory,
        registry_ttl_seconds=LEASE_TTL,
        log_sink=logs.append,
        container=run,
    )
    async with open_directory(stack) as directory:
        clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
        try:
            await launcher.start_all()
            await launcher.wait_ready(directory, timeout=120)
            yield Containers(stack, run, launcher, directory, clients, logs)
        finally:
            await clients.close()
            await launcher.stop_all(grace=20)


async def test_every_service_registers_and_serves_from_its_container(containers) -> None:
    for service in SERVICES:
        registered = {i.instance_id for i in containers.directory.instances(service)}
        assert containers.launcher.expected()[service] <= registered, service
    assert all(p.process.returncode is None for p in containers.launcher.processes)
    assert not any("Traceback" in line for line in containers.logs), containers.logs[-40:]


async def test_the_config_defaults_job_writes_the_default_documents(containers) -> None:
    client = etcd_client(
        containers.stack.etcd_endpoint, tls=ClientTLS.operator(containers.stack.tls_dir)
    )
    try:
        for scope in load_defaults():
            await client.delete(config_key(scope).encode())
        result = await asyncio.to_thread(run_like, containers, "Job", "config-defaults")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "config seed: global written at" in result.stdout
        assert (await store.read(client, SCOPES, "order")).document == load_defaults()["order"]
        again = await asyncio.to_thread(run_like, containers, "Job", "config-defaults")
        assert "global kept" in again.stdout  # never over a document already there
    finally:
        for scope in load_defaults():
            await client.delete(config_key(scope).encode())
            await client.delete_prefix(f"{store.HISTORY_PREFIX}{scope}/".encode())
        await client.close()


async def test_the_seed_job_seeds_the_demo_data(containers) -> None:
    result = await asyncio.to_thread(run_like, containers, "Job", "seed")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "seed: demo data in place (4 products" in result.stdout


async def test_an_order_through_the_containers_is_confirmed(containers) -> None:
    order = await place_demo_order(containers.clients)
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED, order


async def test_the_smoke_job_passes(containers) -> None:
    result = await asyncio.to_thread(run_like, containers, "Job", "smoke")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ORDER_STATUS_CONFIRMED" in result.stdout
    assert result.stdout.rstrip().endswith("smoke: passed")


async def test_shopctl_works_from_its_pod(containers) -> None:
    container = manifest_container("Deployment", "shopctl")
    env = on_test_stack(container, containers.stack)
    run = dataclasses.replace(containers.run, image=container["image"])
    argv = run.argv("test-shopctl", env, ["python", "-m", "ops.shopctl", "products"])
    result = await asyncio.to_thread(
        subprocess.run,
        argv,
        env=containers.run.engine.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "DEMO-TSHIRT" in result.stdout


async def test_the_load_job_writes_its_report(containers, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    reports.chmod(0o777)
    # `make load-k8s` creates this once it has copied the reports; here, up front.
    (reports / ".collected").touch()
    result = await asyncio.to_thread(
        run_like,
        containers,
        "Job",
        "load",
        {
            "LOAD_PROFILE": "smoke",
            "LOAD_ARGS": "--scenario steady-saga --duration 2 --baseline-duration 1 --users 5",
        },
        {reports: "/reports"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (reports / "exit-code").read_text().strip() == "0"
    (report,) = [p for p in reports.glob("*.json") if p.name != "load-buyers.json"]
    assert json.loads(report.read_text())["verdict"]["audit_ok"] is True
    assert list(reports.glob("*.png"))


async def test_sigterm_revokes_the_leases_then_drains(containers) -> None:
    launcher, logs = containers.launcher, containers.logs
    processes = list(launcher.processes)
    started = asyncio.get_running_loop().time()
    await launcher.stop_all(grace=20)
    took = asyncio.get_running_loop().time() - started
    assert [p.process.returncode for p in processes] == [0] * len(processes), logs[-40:]
    # Gone well within the lease TTL: revoked, not expired.
    assert took < LEASE_TTL / 2
    async with open_directory(containers.stack) as fresh:
        assert all(not fresh.instances(s) for s in SERVICES)
    for child in processes:
        mine = [line for line in logs if line.startswith(f"{child.service:<9}|")]
        revoked = next(i for i, line in enumerate(mine) if "revoked lease" in line)
        stopped = next(i for i, line in enumerate(mine) if line.rstrip().endswith("stopped"))
        assert revoked < stopped, mine

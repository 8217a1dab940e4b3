"""`make run REPLICAS=2` and its supervisor: two of each service, crashed ones restarted.

The system here is the launcher `make run REPLICAS=2` builds (devstack.run.launcher_for),
on the test stack with free ports instead of the documented fixed ones, so it can run
beside a developer's `make run`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from devstack import run
from devstack.launcher import (
    REPO_ROOT,
    SERVICES,
    InstanceRecord,
    ServiceProcess,
    SystemLauncher,
    instances_path,
    is_serving,
    open_directory,
    read_instances,
    wipe_system_data,
)
from devstack.stack import Stack
from shared.registry.discovery import ServiceDirectory
from shared.tls import ClientTLS
from tests.e2e.conftest import E2E_TTL
from tests.support.make import make_dry_run
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e

# The page that documents `make run`'s supervision, and names this test beside it.
RUNNING = (REPO_ROOT / "docs" / "running.md").read_text()
EXIT_LINE = r"\[{id} exited with signal SIGKILL after \d+\.\ds up; restarting in 0\.5s\]"


@dataclass
class Supervised:
    stack: Stack
    launcher: SystemLauncher
    directory: ServiceDirectory
    logs: list[str]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(stack: Stack, keys: TestKeys) -> AsyncIterator[Supervised]:
    await wipe_system_data(stack)
    logs: list[str] = []
    launcher = dataclasses.replace(
        run.launcher_for(stack, keys.directory, replicas=2),
        fixed_ports=False,
        # A free port for the gateway too: a `make run` beside the tests keeps 8080.
        gateway_port=0,
        registry_ttl_seconds=E2E_TTL,
        log_sink=logs.append,
    )
    async with open_directory(stack) as directory:
        try:
            await launcher.start_all()
            await launcher.wait_ready(directory, timeout=120)
            yield Supervised(stack, launcher, directory, logs)
        finally:
            await launcher.stop_all()


def one(system: Supervised, service: str, index: int) -> ServiceProcess:
    [child] = [p for p in system.launcher.processes if (p.service, p.index) == (service, index)]
    return child


def records(launcher: SystemLauncher) -> list[InstanceRecord]:
    return [
        InstanceRecord(p.service, p.index, p.instance_id, p.process.pid, p.port)
        for p in launcher.processes
        if p.process.returncode is None
    ]


async def wait_for_line(logs: list[str], text: str, timeout: float = 10.0) -> str:
    async with asyncio.timeout(timeout):
        while True:
            found = [line for line in logs if text in line]
            if found:
                return found[-1]
            await asyncio.sleep(0.05)


async def wait_reregistered(system: Supervised, child: ServiceProcess, old_lease: int) -> str:
    """The instance's key under a new lease, and SERVING there; returns its address."""
    operator = ClientTLS.operator(system.stack.tls_dir)
    async with asyncio.timeout(30):
        while True:
            mine = {i.instance_id: i for i in system.directory.instances(child.service)}
            instance = mine.get(child.instance_id)
            if instance and instance.lease_id != old_lease and await is_serving(instance, operator):
                return instance.address
            await asyncio.sleep(0.1)


def test_make_run_replicas_2_starts_two_supervised_instances_of_each_service(
    stack: Stack, keys: TestKeys
) -> None:
    assert "make run REPLICAS=2" in RUNNING and "tests/e2e/test_supervision.py" in RUNNING
    assert make_dry_run("run", "REPLICAS=2").endswith("-m devstack.run --replicas 2")
    assert run.parse_args(["--replicas", "2"]).replicas == 2
    assert run.parse_args([]).replicas == 1
    launcher = run.launcher_for(stack, keys.directory, run.parse_args(["--replicas", "2"]).replicas)
    assert launcher.replicas == {s: 2 for s in SERVICES}
    assert launcher.supervise and launcher.fixed_ports
    assert [launcher.port_for("order", i) for i in (0, 1)] == [50055, 50155]


@pytest.mark.parametrize("value", ["0", "10", "two", "-1"])
def test_a_bad_replica_count_is_refused_with_the_range(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run.parse_args(["--replicas", value])
    assert exited.value.code == 2
    assert "REPLICAS must be a whole number from 1 to 9" in capsys.readouterr().err


async def test_two_of_each_register_and_the_state_file_lists_them(system: Supervised) -> None:
    for service in SERVICES:
        registered = {i.instance_id: i for i in system.directory.instances(service)}
        children = [p for p in system.launcher.processes if p.service == service]
        assert sorted(p.index for p in children) == [0, 1]
        assert {p.instance_id for p in children} == set(registered)
        for child in children:  # the port a restart reuses is the one it registered
            assert registered[child.instance_id].address == f"127.0.0.1:{child.port}"
    listed = read_instances(system.stack)
    assert len([r for r in listed if r.service in SERVICES]) == 2 * len(SERVICES)
    assert [r.service for r in listed if r.service not in SERVICES] == ["gateway"]
    assert sorted(listed, key=str) == sorted(records(system.launcher), key=str)
    for record in listed:
        os.kill(record.pid, 0)  # alive (ProcessLookupError otherwise)
    rows = run.table_rows(system.stack, system.launcher, system.directory)
    assert {row[1] for row in rows[1:] if row[0] in (*SERVICES, "gateway")} == {
        r.instance_id for r in listed
    }


async def test_a_sigkilled_instance_restarts_with_its_id_and_port(system: Supervised) -> None:
    child = one(system, "order", 1)
    old_pid, port, instance_id = child.process.pid, child.port, child.instance_id
    [before] = [i for i in system.directory.instances("order") if i.instance_id == instance_id]

    os.kill(old_pid, signal.SIGKILL)
    exited = await wait_for_line(system.logs, f"[{instance_id} exited with signal SIGKILL")
    assert re.search(EXIT_LINE.format(id=re.escape(instance_id)), exited), exited
    assert re.search(EXIT_LINE.format(id=r"order-1-[0-9a-f]{4}"), RUNNING)  # as documented
    restarted = await wait_for_line(system.logs, f"[{instance_id} restarted (restart 1)")
    assert child.process.pid != old_pid
    assert restarted.endswith(f"pid {child.process.pid}, port {port}]"), restarted
    assert await wait_reregistered(system, child, before.lease_id) == f"127.0.0.1:{port}"
    assert InstanceRecord("order", 1, instance_id, child.process.pid, port) in read_instances(
        system.stack
    )

    # Down again soon after: the delay doubles.
    [again] = [i for i in system.directory.instances("order") if i.instance_id == instance_id]
    os.kill(child.process.pid, signal.SIGKILL)
    await wait_for_line(system.logs, f"[{instance_id} restarted (restart 2)")
    assert any(
        f"[{instance_id} exited with signal SIGKILL" in line and line.endswith("in 1s]")
        for line in system.logs
    )
    await wait_reregistered(system, child, again.lease_id)
    await system.launcher.wait_ready(system.directory, timeout=30)


async def test_a_sigstopped_instance_is_paused_not_restarted(system: Supervised) -> None:
    child = one(system, "product", 0)
    pid = child.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(1.5)  # three times the first backoff
    finally:
        os.kill(pid, signal.SIGCONT)
    assert child.process.returncode is None and child.process.pid == pid
    assert not [line for line in system.logs if f"[{child.instance_id} exited" in line]


async def test_a_released_instance_stays_down(system: Supervised) -> None:
    child = one(system, "inventory", 1)
    system.launcher.release(child)
    os.kill(child.process.pid, signal.SIGKILL)
    line = await wait_for_line(system.logs, f"[{child.instance_id} exited with signal SIGKILL")
    assert line.endswith("SIGKILL]"), line  # no "restarting in"
    await asyncio.sleep(1.0)
    assert child.process.returncode == -signal.SIGKILL
    assert child.instance_id not in {r.instance_id for r in read_instances(system.stack)}
    assert child.instance_id not in system.launcher.expected()["inventory"]


async def test_stop_all_stops_everything_and_restarts_nothing(system: Supervised) -> None:
    children = list(system.launcher.processes)
    live = [p for p in children if p.process.returncode is None]
    logged = len(system.logs)
    await system.launcher.stop_all()
    await asyncio.sleep(1.5)  # past the first backoff: a restart would have begun
    assert [p.process.returncode for p in live] == [0] * len(live), system.logs[-40:]
    after = system.logs[logged:]
    assert not [line for line in after if "restarting in" in line or "restarted" in line]
    assert not instances_path(system.stack).exists()
    assert read_instances(system.stack) == []
    assert all(not system.directory.instances(s) for s in SERVICES)

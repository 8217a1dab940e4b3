"""The faults themselves, each injected and healed by the runner, and timed.

Every fault that stops something heals it in a ``finally``: a SIGSTOPped process
gets its SIGCONT, a killed daemon its start, a patched config document its
restore, whatever went wrong in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aetcd
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from devstack.stack import Stack
from ops.config_admin import SCOPES
from ops.config_patch import ConfigPatch
from perf.chaos import schedule
from perf.chaos.figures import FaultRecord
from shared.config import store
from shared.messaging.kafka import KafkaIdentity

Say = Callable[[str], None]
# How long a kill's note waits for the supervisor's replacement (informational only).
RESTART_WATCH_SECONDS = 6.0
GROUP_EMPTY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Proc:
    """One running service instance."""

    service: str
    index: int
    instance_id: str
    pid: int


Instances = Callable[[], Sequence[Proc]]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunClock:
    """Times on the run's clock (seconds since the first arrival) and the wall clock."""

    def __init__(self, origin: float) -> None:
        self.origin = origin  # loop (monotonic) time of the first arrival

    def mark(self) -> tuple[float, str]:
        now = asyncio.get_running_loop().time()
        return round(now - self.origin, 3), datetime.now(UTC).isoformat(timespec="milliseconds")


class FaultFailed(RuntimeError):
    """The fault could not be injected as planned (no instance to kill, say)."""


@dataclass
class Injector:
    stack: Stack
    instances: Instances
    etcd: aetcd.Client
    clock: RunClock
    say: Say = print

    def _live(self, service: str) -> list[Proc]:
        found = [p for p in self.instances() if p.service == service and alive(p.pid)]
        if not found:
            raise FaultFailed(f"no live {service} instance to act on")
        return sorted(found, key=lambda p: p.index)

    async def run(self, spec: schedule.FaultSpec) -> FaultRecord:
        start, start_wall = self.clock.mark()
        self.say(f"chaos: +{start:.1f}s {start_wall} {spec.label} ...")
        action = {
            schedule.KILL_INSTANCE: self._kill_instance,
            schedule.STOP_INSTANCE: self._stop_instance,
            schedule.KILL_COMPONENT: self._kill_component,
            schedule.REWIND_OFFSETS: self._rewind_offsets,
            schedule.SLOW_PROVIDER: self._slow_provider,
        }[spec.kind]
        error: str | None = None
        detail = ""
        healed: tuple[float, str] | None = None
        try:
            detail, healed = await action(spec)
        except (FaultFailed, KafkaError, OSError, TimeoutError, RuntimeError) as exc:
            error = f"not as planned: {exc}"
        healed_at, healed_wall = healed if healed is not None else self.clock.mark()
        self.say(
            f"chaos: +{healed_at:.1f}s {healed_wall} {spec.label} healed"
            f"{' (' + (error or detail) + ')' if error or detail else ''}"
        )
        return FaultRecord(
            spec.label, spec.kind, spec.target, start, healed_at, start_wall, healed_wall,
            detail, error,
        )  # fmt: skip

    async def _kill_instance(self, spec: schedule.FaultSpec) -> tuple[str, tuple[float, str]]:
        victim = self._live(spec.target)[0]
        os.kill(victim.pid, signal.SIGKILL)
        healed = self.clock.mark()  # instant: restarting it is the supervisor's job
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        while loop.time() < killed_at + RESTART_WATCH_SECONDS:
            await asyncio.sleep(0.2)
            back = [
                p
                for p in self.instances()
                if p.service == victim.service and p.index == victim.index and p.pid != victim.pid
            ]
            if back and alive(back[0].pid):
                return (
                    f"{victim.instance_id} pid {victim.pid}; restarted as pid {back[0].pid}"
                    f" within {loop.time() - killed_at:.1f}s",
                    healed,
                )
        return (
            f"{victim.instance_id} pid {victim.pid}; no restart seen in {RESTART_WATCH_SECONDS:g}s",
            healed,
        )

    async def _stop_instance(self, spec: schedule.FaultSpec) -> tuple[str, tuple[float, str]]:
        victim = self._live(spec.target)[0]
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(spec.hold)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim.pid, signal.SIGCONT)
        return f"{victim.instance_id} pid {victim.pid}", self.clock.mark()

    async def _kill_component(self, spec: schedule.FaultSpec) -> tuple[str, tuple[float, str]]:
        if not await asyncio.to_thread(self.stack.kill, spec.target):
            raise FaultFailed(f"{spec.target} was not running")
        try:
            await asyncio.sleep(spec.hold)
        finally:
            starting = asyncio.get_running_loop().time()
            await asyncio.to_thread(self.stack.start, spec.target)
        took = asyncio.get_running_loop().time() - starting
        return f"down {spec.hold:g}s, then up again in {took:.1f}s", self.clock.mark()

    async def _rewind_offsets(self, spec: schedule.FaultSpec) -> tuple[str, tuple[float, str]]:
        """SIGSTOP every instance of the group's service, wait until the coordinator has
        expelled them (the group is Empty: only then may another client commit for it),
        move each partition's committed offset back, SIGCONT. They rejoin and fetch
        from the older offsets: events they handled already come again."""
        group = spec.target
        members = self._live(group)
        for p in members:
            os.kill(p.pid, signal.SIGSTOP)
        try:
            moved = await rewind_group(
                self.stack.kafka_bootstrap, self.stack.tls_dir, group, schedule.REWIND_RECORDS
            )
        finally:
            for p in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)
        healed = self.clock.mark()
        return (
            f"{len(members)} {group} instances stopped; {moved} records on "
            f"{group}'s partitions to be redelivered",
            healed,
        )

    async def _slow_provider(self, spec: schedule.FaultSpec) -> tuple[str, tuple[float, str]]:
        patch = ConfigPatch(self.etcd, await store.read(self.etcd, SCOPES, spec.target), "chaos")
        try:
            await patch.set(dict(schedule.SLOW_PROVIDER_KNOBS))
            await asyncio.sleep(spec.hold)
        finally:
            outcome = await patch.restore()
        knobs = ", ".join(f"{k}={v:g}" for k, v in schedule.SLOW_PROVIDER_KNOBS.items())
        return f"{knobs}; {outcome}", self.clock.mark()


def _group_state(response: object) -> tuple[str, int]:
    """(state, members) of the one group a DescribeGroups response describes."""
    try:
        group = response.to_object()["groups"][0]  # type: ignore[attr-defined]
        return str(group["state"]), len(group["members"])
    except (AttributeError, KeyError, IndexError, TypeError) as error:
        raise FaultFailed(f"unexpected DescribeGroups answer: {error!r}") from None


async def rewind_group(bootstrap: str, tls_dir: Path, group: str, records: int) -> int:
    """Moves ``group``'s committed offsets back by up to ``records`` per partition, once
    the group has no members; returns how many records will be delivered again."""
    operator = KafkaIdentity.operator(tls_dir)  # a super user: may rewind any group
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **operator.client_options())
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GROUP_EMPTY_TIMEOUT
        while True:
            state, members = _group_state((await admin.describe_consumer_groups([group]))[0])
            if members == 0 and state in ("Empty", "Dead"):
                break
            if loop.time() > deadline:
                raise TimeoutError(
                    f"group {group} still {state} with {members} members after "
                    f"{GROUP_EMPTY_TIMEOUT:g}s"
                )
            await asyncio.sleep(0.25)
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    targets = {
        tp: max(0, meta.offset - records) for tp, meta in committed.items() if meta.offset > 0
    }
    if not targets:
        return 0
    # A consumer of the group with partitions assigned by hand (no subscription, so it
    # never joins the group) may commit for it while it is Empty.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **operator.client_options(),
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(list(targets))
        await consumer.commit(dict(targets))
    finally:
        await consumer.stop()
    return sum(committed[tp].offset - offset for tp, offset in targets.items())

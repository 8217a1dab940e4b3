"""The open-loop driver: every arrival starts at its scheduled time, whatever came before.

Arrival ``i`` is due at ``start + i / rate`` and is launched as its own task at
that moment; nothing waits for an earlier request to finish. A request's latency
is measured from its *scheduled* time, so when the server (or the generator)
falls behind, the delay shows up as latency instead of quietly stretching the
schedule: no coordinated omission. The concurrency cap only bounds how many
operations are in flight; an arrival that finds it full is dropped and counted,
never queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
# Time between creating the plan and its first arrival, so arrival 0 is not already late.
LEAD_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Call:
    """One finished RPC: when it started (s after the run's start), how long it took, how."""

    start: float
    latency: float
    code: str  # "OK" or a grpc.StatusCode name

    @property
    def end(self) -> float:
        return self.start + self.latency


@dataclass(frozen=True, slots=True)
class SagaOutcome:
    """One placed order followed to its end: terminal status, or UNFINISHED."""

    start: float
    latency: float | None  # scheduled PlaceOrder -> terminal status observed
    state: str
    # The order's status_reason ("out of stock: <sku>", "saga timed out", ...); "" if none.
    reason: str = ""

    @property
    def end(self) -> float | None:
        return None if self.latency is None else self.start + self.latency


@dataclass
class Recorder:
    """Everything one measured phase produced, times relative to its first arrival."""

    origin: float = 0.0  # loop time of arrival 0
    calls: dict[str, list[Call]] = field(default_factory=lambda: defaultdict(list))
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sagas: list[SagaOutcome] = field(default_factory=list)
    # Extra attempts a call needed (PlaceOrder retried through a restart).
    retried: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def call(self, rpc: str, started: float, ended: float, code: str) -> None:
        """``started``/``ended`` are loop times."""
        self.calls[rpc].append(Call(started - self.origin, ended - started, code))

    def drop(self, rpc: str) -> None:
        self.dropped[rpc] += 1

    def saga(self, started: float, ended: float | None, state: str, reason: str = "") -> None:
        latency = None if ended is None else ended - started
        self.sagas.append(SagaOutcome(started - self.origin, latency, state, reason))


@dataclass
class DriveResult:
    scheduled: int
    dropped: int = 0
    succeeded: int = 0
    failed: int = 0
    # Cancelled at the end of the drain: still running long after the window.
    unfinished: int = 0
    # How late each launch was against its schedule: the generator's own lag.
    lag: list[float] = field(default_factory=list)
    # Loop time from arrival 0 to the last operation's end.
    elapsed: float = 0.0

    @property
    def error_rate(self) -> float:
        return (self.failed + self.dropped + self.unfinished) / self.scheduled


@dataclass
class OpenLoop(Generic[T]):
    """Runs ``op(arrival, due)`` for every arrival at ``rate`` per second.

    ``op`` returns whether the operation succeeded (an intended outcome); it
    receives the arrival's loop-time due date, to measure latency from.
    ``on_drop`` hears of arrivals that found the concurrency cap full.
    """

    rate: float
    concurrency: int
    op: Callable[[T, float], Coroutine[Any, Any, bool]]
    on_drop: Callable[[T], None] = lambda _arrival: None
    drain_timeout: float = 60.0

    async def run(self, arrivals: Sequence[T], recorder: Recorder) -> DriveResult:
        loop = asyncio.get_running_loop()
        result = DriveResult(scheduled=len(arrivals))
        in_flight: set[asyncio.Task[bool]] = set()

        def finished(task: asyncio.Task[bool]) -> None:
            in_flight.discard(task)
            if task.cancelled():
                result.unfinished += 1
            elif (error := task.exception()) is not None:
                result.failed += 1
                log.error("load operation crashed: %r", error, exc_info=error)
            elif task.result():
                result.succeeded += 1
            else:
                result.failed += 1

        start = loop.time() + LEAD_SECONDS
        recorder.origin = start
        interval = 1.0 / self.rate
        for index, arrival in enumerate(arrivals):
            due = start + index * interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            result.lag.append(max(0.0, loop.time() - due))
            if len(in_flight) >= self.concurrency:
                result.dropped += 1
                self.on_drop(arrival)
                continue
            task = loop.create_task(self.op(arrival, due))
            in_flight.add(task)
            task.add_done_callback(finished)
        if in_flight:
            await asyncio.wait(set(in_flight), timeout=self.drain_timeout)
        for task in list(in_flight):
            task.cancel()
        if in_flight:
            await asyncio.wait(set(in_flight))
        # Callbacks run on the next loop iteration; let the last ones land.
        await asyncio.sleep(0)
        result.elapsed = loop.time() - start
        return result

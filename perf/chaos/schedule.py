"""The chaos profiles: the load (a flash sale, then a steady saga) and the fault schedule.

A fault is due ``at`` seconds after the first arrival, but never sooner than
``MIN_GAP`` seconds after the previous fault healed, so each recovery is measured
on its own. Every fault is healed within 5 s of being injected, except the two
whose point is to outlast something: the SIGSTOP is held past the registry's
lease TTL (5 s), and the offsets rewind must wait until the coordinator has
expelled the stopped consumers (their session timeout) before it may commit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

KILL_INSTANCE: Final = "kill-instance"  # SIGKILL one instance; the supervisor restarts it
STOP_INSTANCE: Final = "stop-instance"  # SIGSTOP one instance for ``hold`` s, then SIGCONT
KILL_COMPONENT: Final = "kill-component"  # SIGKILL postgres/kafka/etcd, down ``hold`` s, start
REWIND_OFFSETS: Final = "rewind-offsets"  # a consumer group's committed offsets moved back
SLOW_PROVIDER: Final = "slow-provider"  # the payment provider slow and failing for ``hold`` s
KINDS: Final = (KILL_INSTANCE, STOP_INSTANCE, KILL_COMPONENT, REWIND_OFFSETS, SLOW_PROVIDER)

# Between one fault's heal and the next fault: room for the recovery to show.
MIN_GAP: Final = 8.0
# The registry's lease TTL is 5 s (SHOP_<SVC>_REGISTRY_TTL_SECONDS): stopped past it.
STOP_SECONDS: Final = 8.0
# Records per partition the rewind moves a group back (fewer if fewer were committed).
REWIND_RECORDS: Final = 200
# The provider's slow and failing spell (PaymentKnobs).
SLOW_PROVIDER_KNOBS: Final = {"provider_latency_ms": 200.0, "provider_failure_rate": 0.2}


@dataclass(frozen=True)
class FaultSpec:
    at: float  # seconds after the first arrival, at the earliest
    kind: str
    target: str  # a service, a component (postgres, kafka, etcd) or a consumer group
    hold: float = 0.0  # how long the fault lasts before the runner heals it

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (known: {', '.join(KINDS)})")

    @property
    def label(self) -> str:
        return {
            KILL_INSTANCE: f"SIGKILL {self.target}",
            STOP_INSTANCE: f"SIGSTOP {self.target} {self.hold:g}s",
            KILL_COMPONENT: f"SIGKILL {self.target} + restart",
            REWIND_OFFSETS: f"rewind {self.target} offsets",
            SLOW_PROVIDER: f"provider slow+failing {self.hold:g}s",
        }[self.kind]


@dataclass(frozen=True)
class ChaosProfile:
    name: str
    rate: float  # arrivals per second, both phases (open loop)
    flash_seconds: float  # the flash sale's arrivals, first
    steady_seconds: float  # then the steady saga's
    stock: int  # units of the flash sale's SKU (fewer than its arrivals)
    users: int
    faults: tuple[FaultSpec, ...]
    settle: float = 30.0  # the audit re-checks this long
    saga_deadline: float = 60.0  # an order followed this long before it is UNFINISHED

    @property
    def duration(self) -> float:
        return self.flash_seconds + self.steady_seconds

    def at_rate(self, rate: float) -> ChaosProfile:
        """The same run at another rate; the flash sale keeps its ratio of buyers to stock."""
        stock = max(1, round(self.stock * rate / self.rate))
        return replace(self, name=f"{self.name}@{rate:g}", rate=rate, stock=stock)


# 25 orders/s: about half of what two instances per service sustain on the 2-core
# machine (`make bench`), so the queue a fault leaves can drain; at 50/s the run
# measures an overloaded machine, not its faults (README, Chaos). RATE= changes it.
FULL = ChaosProfile(
    name="full",
    rate=25,
    flash_seconds=20,
    steady_seconds=160,
    stock=300,
    users=100,
    faults=(
        # During the flash sale, while its stock is selling.
        FaultSpec(3, KILL_INSTANCE, "inventory"),
        FaultSpec(11, KILL_INSTANCE, "payment"),
        # The steady saga.
        FaultSpec(22, KILL_INSTANCE, "order"),
        FaultSpec(30, KILL_INSTANCE, "product"),
        FaultSpec(38, KILL_INSTANCE, "user"),
        FaultSpec(46, STOP_INSTANCE, "order", hold=STOP_SECONDS),
        FaultSpec(62, KILL_COMPONENT, "kafka", hold=1.0),
        FaultSpec(80, KILL_COMPONENT, "postgres", hold=1.0),
        FaultSpec(98, KILL_COMPONENT, "etcd", hold=1.0),
        FaultSpec(114, REWIND_OFFSETS, "payment"),
        FaultSpec(136, SLOW_PROVIDER, "payment", hold=10.0),
    ),
)

SHORT = ChaosProfile(
    name="short",
    rate=20,
    flash_seconds=6,
    # A broker's restart takes 10+ s here (a JVM): the tail leaves room to see recovery.
    steady_seconds=34,
    stock=60,
    users=24,
    faults=(
        FaultSpec(4, KILL_INSTANCE, "order"),
        FaultSpec(12, KILL_COMPONENT, "kafka", hold=1.0),
    ),
    settle=20.0,
    saga_deadline=45.0,
)

PROFILES: Final = {p.name: p for p in (FULL, SHORT)}


def profile(name: str) -> ChaosProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown chaos profile {name!r} (known: {', '.join(PROFILES)})") from None

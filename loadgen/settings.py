"""What one load run does: a scenario's settings, and the named profiles `make load` runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

FLASH_SALE = "flash-sale"
MIXED = "mixed"
STEADY_SAGA = "steady-saga"
# GetProduct alone: with a rate past the product service's capacity, the same-run
# Check baseline turns the throughput ratio into a capacity comparison.
BROWSE = "browse"
SCENARIOS = (FLASH_SALE, MIXED, STEADY_SAGA, BROWSE)
# How the load reaches the system: gRPC to the services (found in etcd), or REST/JSON
# through the gateway (loadgen/rest.py). REST has GetProduct and PlaceOrder (followed by
# the order's event stream), so the scenarios made of those two only.
GRPC = "grpc"
REST = "rest"
VIAS = (GRPC, REST)
REST_SCENARIOS = (FLASH_SALE, STEADY_SAGA, BROWSE)
# Who buys: real accounts (Register + Login through the user service), or the load
# generator's own OAuth2 client (client credentials, ops/oauth_clients.py): one machine
# token, whose subject is one pseudo-user, so such a scenario has exactly one buyer.
ACCOUNTS = "accounts"
CLIENT = "client"
IDENTITIES = (ACCOUNTS, CLIENT)


@dataclass(frozen=True)
class ScenarioSettings:
    scenario: str
    # Arrivals per second, evenly spaced (open loop), for `duration` seconds.
    rate: float
    duration: float
    # Requests in flight at most; an arrival that finds the cap reached is dropped (and
    # counted), never delayed, so the schedule stays the schedule.
    concurrency: int = 256
    users: int = 50
    # Fixes which operation, buyer and product each arrival gets.
    seed: int = 1
    # The bare health Check runs this long at the same rate (None: as long as the scenario).
    baseline_duration: float | None = None
    # The audit re-checks for up to this long while the saga's last events land.
    settle: float = 20.0
    # Failed + dropped operations over scheduled ones; above it the run fails.
    max_error_rate: float = 0.01
    # flash-sale: units of the hot SKU on sale.
    stock: int = 100
    # How long one order may take to reach a terminal state before it counts as unfinished.
    saga_deadline: float = 45.0
    # grpc or rest (through the gateway); a REST scenario buys as the client (one buyer).
    via: str = GRPC
    identity: str = ACCOUNTS

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r} (known: {', '.join(SCENARIOS)})")
        if self.via not in VIAS or self.identity not in IDENTITIES:
            raise ValueError(f"via is one of {VIAS}, identity one of {IDENTITIES}")
        if self.via == REST and self.scenario not in REST_SCENARIOS:
            raise ValueError(
                f"{self.scenario} has no REST form (REST: {', '.join(REST_SCENARIOS)})"
            )
        if self.via == REST and self.identity != CLIENT:
            raise ValueError("a REST scenario buys with the client's token (identity client)")
        if self.identity == CLIENT and self.users != 1:
            raise ValueError("the client's token is one buyer: users must be 1")
        if not (self.rate > 0 and self.duration > 0):
            raise ValueError("rate and duration must be positive")
        if self.concurrency < 1 or self.users < 1:
            raise ValueError("concurrency and users must be at least 1")

    @property
    def arrivals(self) -> int:
        return max(1, round(self.rate * self.duration))

    @property
    def label(self) -> str:
        """The scenario's name in reports: ``browse``, or ``browse-rest`` through the gateway."""
        return self.scenario if self.via == GRPC else f"{self.scenario}-{self.via}"

    @property
    def baseline_seconds(self) -> float:
        return self.duration if self.baseline_duration is None else self.baseline_duration

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"arrivals": self.arrivals, "baseline_seconds": self.baseline_seconds}


SMOKE = (
    ScenarioSettings(FLASH_SALE, rate=40, duration=3, users=20, stock=30, baseline_duration=2),
    ScenarioSettings(MIXED, rate=60, duration=3, users=20, baseline_duration=2),
    ScenarioSettings(STEADY_SAGA, rate=20, duration=3, users=20, baseline_duration=2),
    ScenarioSettings(BROWSE, rate=100, duration=2, users=20, baseline_duration=2),
)

PROFILES: dict[str, tuple[ScenarioSettings, ...]] = {
    "smoke": SMOKE,
    FLASH_SALE: (
        ScenarioSettings(
            FLASH_SALE,
            # Past ~60/s the one order instance saturates on PlaceOrder (docs/performance.md).
            rate=50,
            duration=30,
            users=200,
            stock=500,
            concurrency=2048,
            baseline_duration=15,
            settle=30,
        ),
    ),
    MIXED: (
        ScenarioSettings(
            MIXED,
            rate=150,
            duration=40,
            users=100,
            concurrency=2048,
            baseline_duration=20,
            settle=30,
        ),
    ),
    STEADY_SAGA: (
        ScenarioSettings(
            STEADY_SAGA,
            rate=100,
            duration=40,
            users=100,
            concurrency=2048,
            baseline_duration=20,
            settle=30,
        ),
    ),
}
PROFILES["browse-peak"] = (
    ScenarioSettings(
        BROWSE,
        rate=1000,
        duration=15,
        users=50,
        concurrency=2048,
        baseline_duration=15,
        settle=5,
        # Overload is the point of a peak probe: its drops and deadlines are the
        # measurement, so only the audit decides whether it passes.
        max_error_rate=1.0,
    ),
)


def edge_pair(settings: ScenarioSettings) -> tuple[ScenarioSettings, ScenarioSettings]:
    """The same plan twice, as the client's one buyer: straight to the services, then
    through the gateway. The rates of ``edge`` stay under the services' per-caller limit
    (100/s a method, shared/config/models.py), which one buyer would otherwise meet."""
    grpc = replace(settings, users=1, identity=CLIENT, via=GRPC)
    return grpc, replace(grpc, via=REST)


# What the REST edge costs: each scenario over gRPC and over REST, in one run.
PROFILES["edge"] = (
    *edge_pair(
        ScenarioSettings(BROWSE, rate=80, duration=15, baseline_duration=5, settle=5),
    ),
    *edge_pair(
        ScenarioSettings(STEADY_SAGA, rate=30, duration=15, baseline_duration=5, settle=20),
    ),
)
PROFILES["full"] = (
    PROFILES[FLASH_SALE] + PROFILES[MIXED] + PROFILES[STEADY_SAGA] + PROFILES["browse-peak"]
)


def resolve(
    profile: str, *, scenario: str | None = None, **overrides: Any
) -> tuple[ScenarioSettings, ...]:
    """The profile's scenarios (or only ``scenario``), with the non-None overrides applied."""
    try:
        chosen = PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})") from None
    if scenario is not None:
        chosen = tuple(s for s in chosen if s.scenario == scenario)
        if not chosen:
            raise ValueError(f"profile {profile!r} has no {scenario!r} scenario")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return tuple(replace(s, **changes) for s in chosen)

"""The runtime knobs: what may change while a service runs, validated by these models.

Two documents in etcd, both JSON: ``/config/global`` (a ``GlobalConfig``: the knobs
every service has) and ``/config/<service>`` (its ``ServiceKnobs`` subclass, which the
service declares and passes in: its own knobs, plus optional overrides of the global
rate limits and faults). An absent
document means the defaults. Addresses and secrets are never knobs: they stay in
the environment (shared/settings.py), and a change to them needs a restart.

Where a knob also has an environment setting (the saga timeout, the provider
simulator), the setting is the default until a document names the knob.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Knobs(BaseModel):
    # A typo must be refused, not silently ignored; and no one mutates a config in use.
    model_config = ConfigDict(extra="forbid", frozen=True)


KnobsT = TypeVar("KnobsT", bound=Knobs)


class RateLimit(Knobs):
    """A token bucket: ``rate_per_second`` refill, ``burst`` capacity."""

    rate_per_second: float = Field(gt=0, le=1_000_000, allow_inf_nan=False)
    burst: int = Field(ge=1, le=1_000_000)


class RateLimits(Knobs):
    """Per caller and per method, on each instance (see shared/rpc/interceptors/ratelimit.py)."""

    enabled: bool = True
    # Any method not listed below.
    default: RateLimit = RateLimit(rate_per_second=100, burst=200)
    # Full method names, e.g. "/shop.order.v1.OrderService/PlaceOrder".
    methods: dict[str, RateLimit] = Field(default_factory=dict)

    def for_method(self, method: str) -> RateLimit:
        return self.methods.get(method, self.default)


class BreakerPolicy(Knobs):
    """Per target service, in every caller (shared/rpc/breaker.py)."""

    # Consecutive failures (UNAVAILABLE, DEADLINE_EXCEEDED) that open it.
    failure_threshold: int = Field(default=5, ge=1, le=1000)
    # How long it stays open before letting trial calls through.
    open_seconds: float = Field(default=5.0, gt=0, le=600, allow_inf_nan=False)
    # Trial calls in half-open; all must succeed to close it, one failure reopens.
    half_open_trials: int = Field(default=3, ge=1, le=100)


class RetryPolicy(Knobs):
    """Client-side retries (shared/rpc/client.py): UNAVAILABLE only, and DEADLINE_EXCEEDED
    only for idempotent reads; exponential backoff with jitter, within the deadline."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    # An attempt of an idempotent call given a deadline is cut short after this long and
    # tried on another instance: a frozen instance (SIGSTOPped, cut off) accepts calls and
    # answers none until its lease expires, and would otherwise take the whole deadline.
    attempt_timeout_ms: float = Field(default=1000.0, gt=0, le=60_000, allow_inf_nan=False)
    initial_backoff_ms: float = Field(default=25.0, ge=0, le=10_000, allow_inf_nan=False)
    max_backoff_ms: float = Field(default=500.0, ge=0, le=60_000, allow_inf_nan=False)
    multiplier: float = Field(default=2.0, ge=1, le=10, allow_inf_nan=False)
    # The retry budget, as gRPC's retryThrottling: every failure costs 1 token, every
    # success earns token_ratio; below half of max_tokens, nothing is retried.
    budget_max_tokens: float = Field(default=10.0, gt=0, le=1000, allow_inf_nan=False)
    budget_token_ratio: float = Field(default=0.1, gt=0, le=1, allow_inf_nan=False)


class DeadlinePolicy(Knobs):
    """Outbound calls carry the incoming call's remaining time minus this margin."""

    margin_ms: float = Field(default=20.0, ge=0, le=10_000, allow_inf_nan=False)


class Faults(Knobs):
    """Injected faults, for the demos and chaos runs: a share of calls answered
    UNAVAILABLE before the handler runs (nothing is applied, so a retry is safe)."""

    unavailable_rate: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)


class Tracing(Knobs):
    """Which share of the requests that enter the system is traced (shared/observability/
    tracing.py): a sampled request is traced through every service and saga hop."""

    # 0.1 %: about a trace a second at a thousand requests a second. Sampled requests are
    # what tracing costs most (their spans recorded, exported, and ingested by Zipkin on
    # the same machine): measured in `make bench`, 1 % cost GetProduct a fifth of its
    # throughput. A person following a request marks it (shopctl, make demo-trace) or
    # raises the ratio for a while.
    sample_ratio: float = Field(default=0.001, ge=0, le=1, allow_inf_nan=False)


class GlobalConfig(Knobs):
    """``/config/global``."""

    # None: each service's own SHOP_<SVC>_LOG_LEVEL.
    log_level: LogLevel | None = None
    rate_limits: RateLimits = RateLimits()
    breaker: BreakerPolicy = BreakerPolicy()
    retry: RetryPolicy = RetryPolicy()
    deadlines: DeadlinePolicy = DeadlinePolicy()
    faults: Faults = Faults()
    tracing: Tracing = Tracing()


class ServiceKnobs(Knobs):
    """``/config/<service>``: overrides of the global knobs for this service alone."""

    log_level: LogLevel | None = None
    rate_limits: RateLimits | None = None
    faults: Faults | None = None
    tracing: Tracing | None = None


class ConfigScopes(Mapping[str, type[Knobs]]):
    """The documents of one config center, by scope: ``global`` and one per service, each
    with the model that validates it (a service's ``ServiceKnobs`` subclass). The services
    are passed in: the kit knows none, whoever writes the documents knows them all."""

    def __init__(self, services: Mapping[str, type[ServiceKnobs]]) -> None:
        if "global" in services:
            raise ValueError("'global' is the shared document's scope, not a service")
        self._models: dict[str, type[Knobs]] = {"global": GlobalConfig, **services}

    def __getitem__(self, scope: str) -> type[Knobs]:
        return self._models[scope]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def model_for(self, scope: str) -> type[Knobs]:
        """The model that validates the document of ``scope`` ("global" or a service)."""
        try:
            return self._models[scope]
        except KeyError:
            raise ValueError(f"unknown scope {scope!r} (known: {', '.join(self)})") from None


def validate_document(
    model: type[KnobsT], document: Any, defaults: Mapping[str, Any] | None = None
) -> KnobsT:
    """``document`` over ``defaults`` (the environment's values), as ``model``.

    Raises pydantic.ValidationError (or ValueError for a non-object).
    """
    if not isinstance(document, dict):
        raise ValueError("a config document is a JSON object")
    return model.model_validate({**(defaults or {}), **document})

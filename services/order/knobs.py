"""Order's runtime knobs: ``/config/order`` in the config center (shared/config/).

Most of them also have an environment setting (services/order/settings.py), which is
their default until the document names them.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.config.models import Knobs, ServiceKnobs


class Degradation(Knobs):
    """Order's degraded path: while product is unreachable, price from the last prices
    seen, if they are at most ``max_staleness_seconds`` old, and only while enabled."""

    enabled: bool = False
    max_staleness_seconds: float = Field(default=300.0, gt=0, le=86_400, allow_inf_nan=False)


# Unset, the saga timeout's wall-clock ceiling is this many timeouts (600 s at 30 s).
SAGA_CEILING_TIMEOUTS = 20


def saga_timeout_ceiling(timeout_seconds: float, max_seconds: float | None) -> float:
    """The wall-clock age past which a pending order is cancelled whatever the saga clock
    did (services/order/saga_timeout.py); raises ValueError below the timeout itself."""
    if max_seconds is None:
        return SAGA_CEILING_TIMEOUTS * timeout_seconds
    if max_seconds < timeout_seconds:
        raise ValueError(
            f"saga_timeout_max_seconds ({max_seconds:g}) must be at least"
            f" saga_timeout_seconds ({timeout_seconds:g})"
        )
    return max_seconds


class OrderKnobs(ServiceKnobs):
    # How long PlaceOrder waits for the catalog's prices (the catalog lookup's deadline).
    product_deadline_seconds: float = Field(default=2.0, gt=0, le=60, allow_inf_nan=False)
    # Seconds of saga-clock time (time the saga could move) a pending order may wait.
    saga_timeout_seconds: float = Field(default=30.0, gt=0, le=86_400, allow_inf_nan=False)
    # The wall-clock ceiling for a truly stuck order; None: SAGA_CEILING_TIMEOUTS timeouts.
    saga_timeout_max_seconds: float | None = Field(
        default=None, gt=0, le=864_000, allow_inf_nan=False
    )
    degradation: Degradation = Degradation()

    @model_validator(mode="after")
    def _ceiling_above_timeout(self) -> OrderKnobs:
        saga_timeout_ceiling(self.saga_timeout_seconds, self.saga_timeout_max_seconds)
        return self

    @property
    def saga_timeout_ceiling_seconds(self) -> float:
        return saga_timeout_ceiling(self.saga_timeout_seconds, self.saga_timeout_max_seconds)

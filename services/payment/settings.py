"""Payment settings: every variable starts with SHOP_PAYMENT_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class PaymentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_PAYMENT_", extra="ignore")
    service_name = "payment"

    # Every wallet is kept in this one currency; top-ups in another are refused.
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")

    # The payment-provider simulator (services/payment/adapters/provider.py). The ceiling keeps a
    # typo from parking every charge for hours; allow_inf_nan=False refuses "nan".
    provider_latency_ms: float = Field(default=2.0, ge=0, le=60_000, allow_inf_nan=False)
    provider_failure_rate: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    # Changes which orders the provider declines; the same seed declines the same orders.
    provider_seed: int | None = None
    # A batch's authorisations run side by side, at most this many at once, before the
    # transaction that books them (services/payment/adapters/authorizer.py).
    provider_concurrency: int = Field(default=32, ge=1, le=1_000)
    # Each provider call's own deadline, and how many calls (same idempotency key) an
    # order gets before its batch is left for a later read.
    provider_timeout_ms: float = Field(default=2_000, gt=0, le=60_000, allow_inf_nan=False)
    provider_attempts: int = Field(default=3, ge=1, le=10)

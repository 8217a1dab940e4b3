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

"""Order settings: every variable starts with SHOP_ORDER_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_ORDER_", extra="ignore")
    service_name = "order"

    # How long PlaceOrder waits for the catalog's prices before answering UNAVAILABLE.
    product_deadline_seconds: float = Field(default=2.0, gt=0, le=60)

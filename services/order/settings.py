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
    # A PENDING order older than this is cancelled ("saga timed out"), so no order
    # waits forever on a lost event or a stuck service.
    saga_timeout_seconds: float = Field(default=30.0, gt=0, le=86_400)
    # How many overdue orders one transaction cancels; the rest wait for the next batch.
    saga_timeout_batch_size: int = Field(default=100, ge=1, le=10_000)

"""Order settings: every variable starts with SHOP_ORDER_."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.order.knobs import saga_timeout_ceiling
from shared.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_ORDER_", extra="ignore")
    service_name = "order"

    # How long PlaceOrder waits for the catalog's prices before answering UNAVAILABLE.
    product_deadline_seconds: float = Field(default=2.0, gt=0, le=60)
    # A PENDING order is cancelled ("saga timed out") once the saga could have moved for
    # this long since it was placed (the saga clock: services/order/saga_timeout.py), so
    # no order waits forever on a lost event or a stuck service, and none is cancelled
    # for an outage of Kafka or PostgreSQL that healed in seconds.
    saga_timeout_seconds: float = Field(default=30.0, gt=0, le=86_400)
    # The wall-clock ceiling: a PENDING order this old is cancelled whatever the saga
    # clock did. At least saga_timeout_seconds; unset, 20 times it (600 s at 30 s).
    saga_timeout_max_seconds: float | None = Field(default=None, gt=0, le=864_000)
    # How many overdue orders one transaction cancels; the rest wait for the next batch.
    saga_timeout_batch_size: int = Field(default=100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _ceiling_above_timeout(self) -> OrderSettings:
        saga_timeout_ceiling(self.saga_timeout_seconds, self.saga_timeout_max_seconds)
        return self

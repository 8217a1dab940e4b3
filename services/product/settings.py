"""Product settings: every variable starts with SHOP_PRODUCT_."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ProductSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_PRODUCT_", extra="ignore")
    service_name = "product"

"""Product settings: every variable starts with SHOP_PRODUCT_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ProductSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_PRODUCT_", extra="ignore")
    service_name = "product"

    # The read path's catalog in memory (services/product/persistence/catalog_cache.py): how many
    # products it keeps (0: none, every read goes to PostgreSQL), and for how long at most.
    catalog_cache_entries: int = Field(default=10_000, ge=0, le=1_000_000)
    catalog_cache_max_age_seconds: float = Field(default=60.0, gt=0, le=86_400)

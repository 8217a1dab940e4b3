"""Inventory settings: every variable starts with SHOP_INVENTORY_."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class InventorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_INVENTORY_", extra="ignore")
    service_name = "inventory"

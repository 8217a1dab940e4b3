"""User settings: every variable starts with SHOP_USER_."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DEV_JWT_DIR, ServiceSettings


class UserSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_USER_", extra="ignore")
    service_name = "user"

    # Signs the tokens; jwt_public_key_file (inherited) must be its pair.
    jwt_private_key_file: Path = DEV_JWT_DIR / "private.pem"
    token_ttl_seconds: int = Field(default=3600, ge=1)

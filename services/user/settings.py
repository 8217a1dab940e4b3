"""User settings: every variable starts with SHOP_USER_."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DEV_JWT_DIR, ServiceSettings


class UserSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_USER_", extra="ignore")
    service_name = "user"

    # The bootstrap signing key: imported into the signing_keys table on the first start
    # (empty table); a key is generated instead if the file does not exist. After that
    # the table is the truth and this file is not read again.
    jwt_private_key_file: Path = DEV_JWT_DIR / "private.pem"
    # The longest token lifetime: a retired signing key is removed this long (plus the
    # leeway) after it stopped signing, once every token it signed has expired.
    token_ttl_seconds: int = Field(default=3600, ge=1)
    signing_key_leeway_seconds: float = Field(default=30.0, ge=0)

    # The OAuth2 / OpenID Connect authorization server (adapters/oauth/): HTTPS beside the
    # gRPC port, with this service's certificate, open only to callers with a certificate
    # of the CA (the gateway, operators). 0 picks a free port; the real one is registered.
    oauth_port: int = Field(default=0, ge=0, le=65_535)
    # The clients (adapters/oauth/clients.py, ClientsFile), upserted at start-up; unset: the
    # table is left as it is (no client, no flow, on a fresh database).
    oauth_clients_file: Path | None = None
    # An OAuth2 access token's life; never longer than token_ttl_seconds (the keyring's).
    oauth_access_token_ttl_seconds: int = Field(default=900, ge=1)
    oauth_refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    # The authorization server's own sign-in cookie.
    oauth_login_session_ttl_seconds: int = Field(default=12 * 3600, ge=60)

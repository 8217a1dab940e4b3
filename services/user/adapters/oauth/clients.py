"""The clients file (``SHOP_USER_OAUTH_CLIENTS_FILE``): the OAuth2 clients this server knows,
upserted into ``oauth_clients`` at every start (a client left out of the file is deleted,
with whatever it was given).

A JSON list of objects::

    [{"client_id": "storefront", "name": "Storefront", "secret_file": "/run/secrets/storefront",
      "redirect_uris": ["http://localhost:8080/auth/callback"], "first_party": true,
      "grant_types": ["authorization_code", "refresh_token"],
      "scopes": ["openid", "profile", "email", "orders:read", "orders:write"]},
     {"client_id": "shop-cli", "redirect_uris": ["http://127.0.0.1:8976/callback"],
      "grant_types": ["authorization_code", "refresh_token"], "scopes": ["openid", "orders:read"]}]

``secret_file`` holds the plain secret (written by the launcher, or a Kubernetes Secret);
only its SHA-256 reaches the table. Without one the client is public: it authenticates by
PKCE alone and may not use ``client_credentials``. ``first_party`` (default false) skips the
consent page: the project's own storefront, never a third party's app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from services.user.domain import OAuthClient, secret_hash
from shared.auth.scopes import ALL_SCOPES

GrantTypeName = Literal["authorization_code", "refresh_token", "client_credentials"]
# A secret shorter than this is a password, not a generated secret.
MIN_SECRET_LENGTH = 32


class ClientEntry(BaseModel):
    """One client of the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    name: str = Field(default="", max_length=200)
    secret_file: Path | None = None
    redirect_uris: list[str] = []
    grant_types: list[GrantTypeName] = Field(min_length=1)
    scopes: list[str] = []
    first_party: bool = False

    @field_validator("redirect_uris")
    @classmethod
    def _absolute(cls, uris: list[str]) -> list[str]:
        for uri in uris:
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
                raise ValueError(f"{uri!r} is not an absolute http(s) URI without a fragment")
        return uris

    @field_validator("scopes")
    @classmethod
    def _known(cls, scopes: list[str]) -> list[str]:
        unknown = sorted(set(scopes) - ALL_SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; known: {sorted(ALL_SCOPES)}")
        return scopes

    @model_validator(mode="after")
    def _coherent(self) -> ClientEntry:
        if "client_credentials" in self.grant_types and self.secret_file is None:
            raise ValueError("client_credentials needs a secret_file (a confidential client)")
        if "authorization_code" in self.grant_types and not self.redirect_uris:
            raise ValueError("authorization_code needs at least one redirect_uri")
        if "refresh_token" in self.grant_types and "authorization_code" not in self.grant_types:
            raise ValueError("refresh_token comes with authorization_code")
        return self

    def client(self) -> OAuthClient:
        """The client as stored: the secret read from its file and hashed."""
        hashed = None
        if self.secret_file is not None:
            secret = self.secret_file.read_text().strip()
            if len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"the secret of {self.client_id} ({self.secret_file}) is shorter than"
                    f" {MIN_SECRET_LENGTH} characters"
                )
            hashed = secret_hash(secret)
        return OAuthClient(
            client_id=self.client_id,
            name=self.name or self.client_id,
            secret_hash=hashed,
            redirect_uris=tuple(self.redirect_uris),
            grant_types=frozenset(self.grant_types),
            scopes=frozenset(self.scopes),
            first_party=self.first_party,
        )


ClientsFile = TypeAdapter(list[ClientEntry])


def load_clients(path: Path) -> list[OAuthClient]:
    """The file's clients; ValueError (pydantic's ValidationError is one) if it is wrong."""
    entries = ClientsFile.validate_json(path.read_bytes())
    ids = [e.client_id for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{path}: client_id {duplicates} declared more than once")
    return [e.client() for e in entries]

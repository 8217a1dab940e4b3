"""The gateway's settings: every variable starts with SHOP_GATEWAY_.

The gateway is a deployable like a service (etcd, its own database, tracing, metrics,
mutual TLS as ``gateway`` to the services), plus what only the edge has: an HTTP port,
the storefront's public origin, the OAuth2 client it is, sessions, and the limits every
request from the internet meets.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_ISSUER, ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_GATEWAY_", extra="ignore")
    service_name = "gateway"

    # Where REST/JSON and the storefront are served; 0 picks a free port (registered in
    # etcd as the instance's `http` address, where the tests and Prometheus find it).
    http_port: int = Field(default=8080, ge=0, le=65_535)
    # The storefront's origin as browsers see it (the OAuth2 redirect URIs and the
    # issuer live under it).
    public_url: str = DEFAULT_ISSUER
    # The gateway's own OAuth2 client at the user service's authorization server.
    oauth_client_id: str = "storefront"
    oauth_client_secret_file: Path | None = None
    session_ttl_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)
    # Request bodies over this are refused (413) before the handler reads them.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # A token bucket per client: the token's client_id and subject, or the remote IP for
    # a request without a valid token.
    rate_limit_enabled: bool = True
    rate_limit_per_second: float = Field(default=20.0, gt=0, le=100_000)
    rate_limit_burst: int = Field(default=40, ge=1, le=100_000)
    # Serve HTTPS at the edge (then HSTS and Secure cookies); plain HTTP without them.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Each gRPC call's deadline, all its attempts together (shared/rpc/client.py).
    grpc_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # A product page waits this long for its stock before it shows "unknown" instead.
    stock_timeout_seconds: float = Field(default=0.5, gt=0, le=30)
    # How long an order's event stream may stay open, and how often it says it is alive.
    sse_max_seconds: float = Field(default=300.0, gt=0, le=3600)
    sse_keepalive_seconds: float = Field(default=15.0, gt=0, le=300)
    # How long a stored Idempotency-Key answer is replayed.
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=30 * 86_400)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

"""Typed settings every service shares; each service adds its own env prefix.

A service's settings class sets ``env_prefix`` (e.g. ``SHOP_PRODUCT_``), so
``SHOP_PRODUCT_ETCD_ENDPOINT`` configures the product service's etcd. The only
address of the outside world a service needs is etcd's: peers are discovered.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_JWT_DIR = REPO_ROOT / ".stack" / "dev" / "jwt"
DEV_TLS_DIR = REPO_ROOT / ".stack" / "dev" / "tls"
# The issuer is the authorization server's public URL (its discovery document says
# the same): the storefront's origin, where the gateway serves /oauth2/ and
# /.well-known/ (`make run`, and `make up`'s port-forward, both on port 8080).
DEFAULT_ISSUER = "http://localhost:8080"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore")

    # The service's registry name: /services/<service_name>/<instance_id>.
    service_name: ClassVar[str] = ""

    host: str = "127.0.0.1"
    # 0 picks a free port; the real one is what gets registered.
    port: int = 0
    # The host peers should dial, when it differs from the bind host (k8s pod IP).
    advertise_host: str = ""
    # A plaintext port serving only the gRPC health service, for Kubernetes' probes,
    # which cannot present a client certificate. 0: none (the health service is always
    # on the mTLS port too).
    health_port: int = Field(default=0, ge=0, le=65_535)
    instance_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    version: str = "0.1.0"

    etcd_endpoint: str = "127.0.0.1:12379"
    registry_ttl_seconds: int = Field(default=5, ge=1, le=300)

    # No default: a service connects only as its own role (the launcher, or a Kubernetes
    # Secret, sets SHOP_<SERVICE>_PG_DSN), never silently as whoever a default names.
    pg_dsn: str = ""
    pg_pool_min_size: int = 2
    pg_pool_max_size: int = 10

    kafka_bootstrap: str = "127.0.0.1:19092"
    # How fast a lost consumer's partitions move and a restarted broker is found again
    # (shared/messaging/kafka.py). The broker's group.min.session.timeout.ms must allow
    # the session timeout.
    kafka_session_timeout_ms: int = Field(default=3_000, ge=1_000, le=300_000)
    kafka_heartbeat_interval_ms: int = Field(default=1_000, ge=100, le=60_000)
    kafka_metadata_max_age_ms: int = Field(default=10_000, ge=1_000, le=600_000)

    # Tokens are verified against the JWKS the user service publishes in etcd
    # (/config/auth/jwks, shared/auth/jwks.py); no key file is needed.
    jwt_issuer: str = DEFAULT_ISSUER
    jwt_audience: str = "shop"

    # ca.pem, <service>.pem and <service>-key.pem (shared/tls.py); mTLS is always on.
    tls_dir: Path = DEV_TLS_DIR

    # etcd and Kafka over TLS with this service's certificate (and PostgreSQL by the DSN's
    # sslmode=verify-full). False only for the plaintext baseline of `make bench-trust`
    # (profile bench-plain, whose etcd, Kafka and PostgreSQL have no TLS and no auth):
    # etcd and Kafka are then dialled in plaintext without a certificate. It cannot
    # weaken a real deployment: its servers accept TLS with a client certificate of the
    # CA only, so a client with this off is refused, never let in with less. gRPC's mTLS
    # is not affected. (PostgreSQL's sslmode is in the DSN, which the launcher builds.)
    infra_tls: bool = True

    # False serves the gRPC API and relays the outbox, but takes no saga events from
    # Kafka: an instance that must not join the consumer group, such as the API tests,
    # which share the test stack's topics with every other test.
    consume_events: bool = True

    log_level: str = "INFO"
    # Where the JSON log file goes (<log_dir>/<service>-<instance_id>.jsonl, with trace and
    # span ids); unset: none. The console keeps the readable lines either way.
    log_dir: Path | None = None

    # Zipkin's span endpoint (http://host:9411/api/v2/spans); empty: no spans recorded.
    trace_endpoint: str = ""
    # The Prometheus /metrics port (plain HTTP, registered in etcd with the instance);
    # 0 picks a free one. metrics_enabled=false drops the port and the RPC metrics (the
    # baseline of the overhead benchmark).
    metrics_port: int = Field(default=0, ge=0, le=65_535)
    metrics_enabled: bool = True
    # How long in-flight RPCs may run after shutdown begins.
    shutdown_grace_seconds: float = 5.0

    def database_dsn(self) -> str:
        """pg_dsn, or a clear error when it was not set."""
        if not self.pg_dsn:
            prefix = self.model_config.get("env_prefix", "SHOP_")
            raise ValueError(
                f"no database DSN for the {self.service_name or 'a'} service: set {prefix}PG_DSN "
                "(`make run` and the tests set it from the local stack)"
            )
        return self.pg_dsn

    @property
    def etcd_host_port(self) -> tuple[str, int]:
        host, _, port = self.etcd_endpoint.rpartition(":")
        return host, int(port)

"""The system the edge fuzzer aims at: the five services, the authorization server, a gateway.

The services are the gRPC fuzzer's (``harness.Fuzzer``): in this process, on fresh
databases seeded with the demo catalogue and a few more states, with no saga consumers,
so while one request is in flight nothing else writes (the outbox relay only marks
events sent). The user service runs its authorization server with the project's OAuth2
clients (ops/oauth_clients.py, secrets made for this run), and a real ``GatewayServer``
runs over them all as it is deployed: its own database, the JWKS watch, discovery,
mutual TLS as ``gateway``, its own OAuth2 client (so an anonymous visitor's catalog
calls carry the client credentials grant's token). Its rate limit is raised out of the
way: one client sending thousands of requests would otherwise meet mostly 429s.

The issuer is the default one (``shared.settings.DEFAULT_ISSUER``), which every party
agrees on; the gateway listens on a free port, so an absolute URL the authorization
server builds names the issuer's origin, and the fuzzer reads it by its path.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from devstack import launcher
from devstack.stack import Stack
from gateway.server import GatewayServer
from gateway.settings import GatewaySettings
from ops.oauth_clients import (
    CLI_REDIRECT,
    LOADGEN,
    STOREFRONT,
    oauth_clients,
    read_client_secret,
    write_clients_file,
)
from shared.auth.identity import Role
from shared.auth.scopes import ORDERS_READ
from shared.auth.tokens import TokenIssuer
from shared.settings import DEFAULT_ISSUER
from tests.fuzz.harness import Database, Fuzzer
from tests.support.tokens import AUDIENCE, TestKeys

ISSUER = DEFAULT_ISSUER
GATEWAY_DB = "gateway"
TTL = timedelta(minutes=30)


class _ServicesWithOAuth(Fuzzer):
    """The gRPC fuzzer's services, the user service with its authorization server."""

    def __init__(self, stack: Stack, keys: TestKeys, clients_file: Path) -> None:
        super().__init__(stack, keys)
        self._clients_file = clients_file

    def _overrides(self, service: str) -> dict[str, Any]:
        overrides = super()._overrides(service)
        if service == "user":
            overrides["oauth_clients_file"] = self._clients_file
        return overrides


@dataclass(frozen=True)
class Principal:
    """A caller of the REST API: a name for reports, and its Authorization header."""

    name: str
    authorization: str | None
    user_id: uuid.UUID | None = None


def _forged(keys: TestKeys, user: uuid.UUID) -> dict[str, str]:
    """Tokens that must be refused, each for another reason."""
    own = keys.issuer()
    stranger = TokenIssuer(
        rsa.generate_private_key(public_exponent=65_537, key_size=2048), ISSUER, AUDIENCE, TTL
    )
    header, payload, _ = own.issue(user, Role.CUSTOMER)[0].split(".")
    return {
        "expired": keys.issuer().issue(user, Role.CUSTOMER, ttl=timedelta(seconds=-60))[0],
        "wrong-audience": TokenIssuer(own.private_key, ISSUER, "not-shop", TTL).issue(
            user, Role.CUSTOMER
        )[0],
        "wrong-issuer": TokenIssuer(own.private_key, "https://evil.example", AUDIENCE, TTL).issue(
            user, Role.CUSTOMER
        )[0],
        "unknown-key": stranger.issue(user, Role.ADMIN)[0],
        "unsigned": f"{header}.{payload}.",
        "tampered": f"{header}.{payload}x.{own.issue(user, Role.CUSTOMER)[0].split('.')[2]}",
    }


class EdgeSystem:
    """``async with EdgeSystem(stack, keys) as system:`` the gateway's URL, the databases,
    the callers, and the seeded ids to aim at."""

    def __init__(self, stack: Stack, keys: TestKeys) -> None:
        self.stack = stack
        self.keys = keys
        self._resources = contextlib.AsyncExitStack()
        self._secrets = Path(tempfile.mkdtemp(prefix="fuzz-oauth-"))
        self.services = _ServicesWithOAuth(stack, keys, self._secrets / "clients.json")
        self.server: GatewayServer | None = None
        self.databases: dict[str, Database] = {}
        self.principals: list[Principal] = []
        self.client_secrets: dict[str, str] = {}
        self.redirect_uris: dict[str, tuple[str, ...]] = {}

    @property
    def url(self) -> str:
        assert self.server is not None, "not started"
        return self.server.url

    async def __aenter__(self) -> EdgeSystem:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> None:
        write_clients_file(self._secrets / "clients.json", ISSUER, self._secrets / "secrets")
        for client in oauth_clients(ISSUER):
            self.redirect_uris[client.client_id] = client.redirect_uris
            if client.confidential:
                secret = read_client_secret(self._secrets / "secrets", client.client_id)
                self.client_secrets[client.client_id] = secret
        await self._resources.enter_async_context(self.services)
        self.databases = dict(self.services.databases)
        gateway_dsn = await launcher.recreate_database(self.stack, "shop_gateway")
        settings = GatewaySettings(
            pg_dsn=gateway_dsn,
            etcd_endpoint=self.stack.etcd_endpoint,
            tls_dir=self.stack.tls_dir,
            http_port=0,
            instance_id=f"gateway-fuzz-{uuid.uuid4().hex[:6]}",
            registry_ttl_seconds=2,
            shutdown_grace_seconds=1.0,
            oauth_client_id=STOREFRONT,
            oauth_client_secret_file=self._secrets / "secrets" / STOREFRONT,
            rate_limit_per_second=100_000,
            rate_limit_burst=100_000,
            sse_keepalive_seconds=0.5,
            sse_max_seconds=2.0,
        )
        self.server = GatewayServer(settings)
        self._resources.push_async_callback(self.server.stop)
        await self.server.start()
        gateway_db = Database(gateway_dsn)
        await gateway_db.open()
        self._resources.push_async_callback(gateway_db.close)
        self.databases[GATEWAY_DB] = gateway_db
        self.principals = self._principals()

    async def close(self) -> None:
        await self._resources.aclose()

    # --- who calls ---

    def user_id(self, name: str) -> uuid.UUID:
        """The seeded user's id (``customer`` or ``admin``)."""
        caller = next(c for c in self.services.callers if c.name == name)
        assert caller.user_id is not None
        return caller.user_id

    def _principals(self) -> list[Principal]:
        customer, admin = self.user_id("customer"), self.user_id("admin")
        other = uuid.UUID(int=0xF00D)
        issuer = self.keys.issuer()

        def token(user: uuid.UUID, role: Role, **extra: Any) -> str:
            return "Bearer " + issuer.issue(user, role, **extra)[0]

        forged = _forged(self.keys, customer)
        return [
            Principal("none", None),
            *[Principal("customer", token(customer, Role.CUSTOMER), customer)] * 6,
            *[Principal("admin", token(admin, Role.ADMIN), admin)] * 3,
            Principal("another-customer", token(other, Role.CUSTOMER), other),
            Principal(
                "customer-read-only", token(customer, Role.CUSTOMER, scopes=[ORDERS_READ]), customer
            ),
            Principal("machine", token(uuid.UUID(int=0), Role.CUSTOMER, client_id=LOADGEN)),
            *[Principal(name, "Bearer " + value, customer) for name, value in forged.items()],
            Principal("malformed", "Bearer not.a.token"),
            Principal("basic", "Basic " + "c3RvcmVmcm9udDp4"),
            Principal("empty-bearer", "Bearer"),
            Principal("two-tokens", token(customer, Role.CUSTOMER) + " extra"),
        ]

    # --- what to aim at ---

    def strings(self, name: str) -> list[str]:
        """Seeded values by field name (the gRPC fuzzer's vocabulary)."""
        return list(self.services.vocabulary.values_for(name))

    @property
    def cli_redirect(self) -> str:
        return CLI_REDIRECT

"""The launcher's side of the edge, without starting anything: the gateway's environment
and port, the user service's OAuth2 port and clients file, the client secrets, and what
`make run` prints. (Starting the gateway needs gateway/__main__.py, which the e2e tests
run against.)"""

from __future__ import annotations

import asyncio
import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from devstack import config, launcher
from devstack.launcher import (
    DEV_GATEWAY_PORT,
    GatewayMissing,
    SystemLauncher,
    command_for,
    gateway_ready,
    oauth_clients_file,
    oauth_secrets_dir,
)
from devstack.run import launcher_for, parse_args, storefront_line
from devstack.stack import Stack
from ops import oauth_clients
from shared.settings import DEFAULT_ISSUER


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """A stack whose files (passwords, clients, secrets) are made under tmp_path."""
    monkeypatch.setattr(config, "STACK_ROOT", tmp_path)
    return Stack("test4")


def test_make_run_serves_the_storefront_on_8080_the_issuers_origin(stack: Stack) -> None:
    run = launcher_for(stack, Path("/jwt"), replicas=2)
    assert run.gateway and run.gateway_port == DEV_GATEWAY_PORT == 8080
    assert run.public_url == "http://localhost:8080" == DEFAULT_ISSUER
    env = run.env_for("gateway", "gateway-1-abcd", run.port_for("gateway", 0))
    assert env["SHOP_GATEWAY_HTTP_PORT"] == "8080"
    assert env["SHOP_GATEWAY_PUBLIC_URL"] == "http://localhost:8080"
    assert env["SHOP_GATEWAY_METRICS_PORT"] in ("9080", "0")  # 0: 9080 held, a free one
    # The user service's OAuth2 port: its gRPC port + 2000, each replica + 100.
    assert run.http_port_for("user", 0) == 52051 and run.http_port_for("user", 1) == 52151
    assert run.http_port_for("order", 0) == 0
    user = run.env_for("user", "user-2-abcd", 50151, run.http_port_for("user", 1))
    assert user["SHOP_USER_OAUTH_PORT"] == "52151"
    assert user["SHOP_USER_OAUTH_CLIENTS_FILE"] == str(oauth_clients_file(stack))


def test_the_gateways_environment(stack: Stack) -> None:
    run = SystemLauncher(stack, Path("/jwt"), gateway=True, gateway_port=18080)
    env = run.env_for("gateway", "gateway-1-abcd", 18080)
    assert env["SHOP_GATEWAY_INSTANCE_ID"] == "gateway-1-abcd"
    assert env["SHOP_GATEWAY_HOST"] == "127.0.0.1"
    assert env["SHOP_GATEWAY_HTTP_PORT"] == "18080"
    assert env["SHOP_GATEWAY_PUBLIC_URL"] == "http://localhost:18080"
    assert env["SHOP_GATEWAY_JWT_ISSUER"] == "http://localhost:18080"
    assert env["SHOP_GATEWAY_OAUTH_CLIENT_ID"] == "storefront"
    secret = Path(env["SHOP_GATEWAY_OAUTH_CLIENT_SECRET_FILE"])
    assert secret == oauth_secrets_dir(stack) / "storefront"
    assert env["SHOP_GATEWAY_ETCD_ENDPOINT"] == stack.etcd_endpoint
    assert env["SHOP_GATEWAY_TLS_DIR"] == str(stack.tls_dir)
    # Its own role, into its own database, over verified TLS.
    dsn = env["SHOP_GATEWAY_PG_DSN"]
    assert dsn.startswith("postgresql://shop_gateway:") and "/shop_gateway?" in dsn
    assert "sslmode=verify-full" in dsn
    assert env["SHOP_GATEWAY_TRACE_ENDPOINT"] == stack.zipkin.spans_url
    assert env["SHOP_GATEWAY_LOG_DIR"] == str(stack.profile.logs_dir)
    # No Kafka, and no gRPC port: it is no service.
    assert not [k for k in env if "KAFKA" in k]
    assert "SHOP_GATEWAY_PORT" not in env
    assert command_for("gateway") == ["-m", "gateway", "serve"]
    assert command_for("order") == ["-m", "services.order.main", "serve"]


def test_tests_pick_the_gateways_port_before_anything_starts(stack: Stack) -> None:
    run = SystemLauncher(stack, Path("/jwt"), gateway=True)
    port = run.gateway_port
    assert port > 0 and run.port_for("gateway", 0) == port
    assert run.public_url == f"http://localhost:{port}"
    # Everyone agrees on the issuer: the storefront's origin.
    for service in ("user", "order", "gateway"):
        env = run.env_for(service, f"{service}-1-abcd", 0, run.http_port_for(service, 0))
        assert env[f"SHOP_{service.upper()}_JWT_ISSUER"] == run.public_url
    # The redirect URI in the user service's clients file is on that origin too.
    document = json.loads(run.write_oauth_clients().read_text())
    storefront = next(c for c in document if c["client_id"] == "storefront")
    assert storefront["redirect_uris"] == [f"http://localhost:{port}/auth/callback"]
    # A free OAuth2 port for the user service, given (a restart comes back on it).
    assert run.http_port_for("user", 0) > 0


def test_without_the_gateway_nothing_changes_for_the_services(stack: Stack) -> None:
    run = SystemLauncher(stack, Path("/jwt"))
    assert not run.gateway and run.gateway_port == 0 and run.public_url == DEFAULT_ISSUER
    env = run.env_for("order", "order-1-abcd", 0)
    assert "SHOP_ORDER_JWT_ISSUER" not in env  # the default, as the tests' tokens expect
    assert env["SHOP_ORDER_KAFKA_BOOTSTRAP"] == stack.kafka_bootstrap
    assert set(run.expected()) == {"user", "product", "inventory", "payment", "order", "gateway"}
    assert all(not ids for ids in run.expected().values())
    with pytest.raises(ValueError, match="gateway=True"):
        asyncio.run(run.start_gateway())


def test_no_gateway_module_is_a_clear_error(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "GATEWAY_ENTRY_POINT", config.REPO_ROOT / "no" / "gateway.py")
    assert not launcher.gateway_available()
    run = SystemLauncher(stack, Path("/jwt"), gateway=True)
    with pytest.raises(GatewayMissing, match="start without it"):
        asyncio.run(run.start_gateway())


# --- the clients file and the secrets ---------------------------------------------------------


def test_the_clients_file_is_the_contract_the_user_service_reads(stack: Stack) -> None:
    run = SystemLauncher(stack, Path("/jwt"), gateway=True, gateway_port=8080, fixed_ports=True)
    path = run.write_oauth_clients()
    assert path == stack.profile_dir / "oauth" / "clients.json"
    document = {c["client_id"]: c for c in json.loads(path.read_text())}
    assert set(document) == {"storefront", "loadgen", "shop-cli"}
    secrets = stack.profile_dir / "secrets" / "oauth"
    assert document["storefront"] == {
        "client_id": "storefront",
        "name": "Storefront",
        "secret_file": str(secrets / "storefront"),
        "redirect_uris": ["http://localhost:8080/auth/callback"],
        # client credentials: the gateway's own token for visitors not signed in
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "scopes": [
            "openid",
            "profile",
            "email",
            "catalog:read",
            "orders:read",
            "orders:write",
            "wallet:read",
            "wallet:write",
            "catalog:admin",
            "stock:admin",
        ],
        "first_party": True,
    }
    loadgen = document["loadgen"]
    assert loadgen["secret_file"] == str(secrets / "loadgen")
    assert loadgen["grant_types"] == ["client_credentials"] and loadgen["redirect_uris"] == []
    assert loadgen["scopes"] == [
        "catalog:read",
        "orders:read",
        "orders:write",
        "wallet:read",
        "wallet:write",
    ]
    cli = document["shop-cli"]
    assert "secret_file" not in cli and "first_party" not in cli  # public, and asked consent
    assert cli["redirect_uris"] == ["http://127.0.0.1:8976/callback"]
    assert cli["grant_types"] == ["authorization_code", "refresh_token"]
    assert "catalog:admin" not in cli["scopes"] and "openid" in cli["scopes"]


def test_secrets_are_made_once_per_stack_and_private(stack: Stack) -> None:
    run = SystemLauncher(stack, Path("/jwt"), gateway=True)
    run.write_oauth_clients()
    secrets = oauth_secrets_dir(stack)
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    first = {}
    for client in ("storefront", "loadgen"):
        path = secrets / client
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        first[client] = oauth_clients.read_client_secret(secrets, client)
        assert len(first[client]) >= 43  # token_urlsafe(32)
    assert first["storefront"] != first["loadgen"]
    assert not (secrets / "shop-cli").exists()
    # Another launcher of the stack, on another port: a new redirect URI, the same secrets.
    again = SystemLauncher(stack, Path("/jwt"), gateway=True)
    again.write_oauth_clients()
    assert {c: oauth_clients.read_client_secret(secrets, c) for c in first} == first
    assert f"localhost:{again.gateway_port}/auth/callback" in oauth_clients_file(stack).read_text()


def test_a_missing_or_empty_secret_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no secret for OAuth client 'loadgen'"):
        oauth_clients.read_client_secret(tmp_path, "loadgen")
    (tmp_path / "loadgen").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        oauth_clients.read_client_secret(tmp_path, "loadgen")


def test_a_pod_reads_the_secrets_where_they_are_mounted(tmp_path: Path) -> None:
    path = oauth_clients.write_clients_file(
        tmp_path / "clients.json",
        "http://localhost:8080",
        tmp_path / "secrets",
        seen_at=Path("/etc/shop/oauth"),
    )
    files = {c["client_id"]: c.get("secret_file") for c in json.loads(path.read_text())}
    assert files == {
        "storefront": "/etc/shop/oauth/storefront",
        "loadgen": "/etc/shop/oauth/loadgen",
        "shop-cli": None,
    }
    assert (tmp_path / "secrets" / "storefront").is_file()


# --- readiness, and what `make run` prints --------------------------------------------------


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_the_gateway_is_ready_when_its_readiness_answers_200(
    health_server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = health_server.server_address[1]
    assert await gateway_ready(port)
    monkeypatch.setattr(_Health, "status", 503)  # its database or etcd not there yet
    assert not await gateway_ready(port)
    assert not await gateway_ready(launcher.free_port())  # nothing listening


def test_make_run_prints_the_storefront_and_the_demo_accounts(stack: Stack) -> None:
    line = storefront_line(launcher_for(stack, Path("/jwt"), replicas=1))
    assert line == (
        "Storefront: http://localhost:8080/  (demo customer demo@shop.local / demo-password-1,"
        " admin admin@shop.local / admin-password-1)"
    )
    assert parse_args([]).gateway is True
    assert parse_args(["--no-gateway"]).gateway is False


# --- a stand-in gateway, started, supervised and stopped as the real one would be --------------

# Serves /healthz/ready on SHOP_GATEWAY_HTTP_PORT once it has every setting the launcher
# promises gateway/ (and exits 1 at once if one is missing).
STAND_IN = """
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
wanted = ["INSTANCE_ID", "HOST", "HTTP_PORT", "PUBLIC_URL", "OAUTH_CLIENT_ID",
          "OAUTH_CLIENT_SECRET_FILE", "ETCD_ENDPOINT", "PG_DSN", "TLS_DIR", "JWT_ISSUER"]
missing = [w for w in wanted if not os.environ.get("SHOP_GATEWAY_" + w)]
if missing or not open(os.environ["SHOP_GATEWAY_OAUTH_CLIENT_SECRET_FILE"]).read():
    print("missing", missing, flush=True)
    sys.exit(1)
class Ready(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz/ready" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
print("serving", os.environ["SHOP_GATEWAY_PUBLIC_URL"], flush=True)
address = (os.environ["SHOP_GATEWAY_HOST"], int(os.environ["SHOP_GATEWAY_HTTP_PORT"]))
HTTPServer(address, Ready).serve_forever()
"""


class NoServices:
    """The directory wait_ready reads; no service runs here."""

    def instances(self, service: str) -> list[object]:
        return []


async def test_the_gateway_is_started_waited_for_and_stopped(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pki.authority import ensure_authority
    from shared.tls import OPERATOR

    ensure_authority(stack.tls_dir, [OPERATOR])  # wait_ready asks the services as it
    monkeypatch.setattr(launcher, "gateway_available", lambda: True)
    monkeypatch.setattr(launcher, "command_for", lambda service: ["-c", STAND_IN])
    logs: list[str] = []
    run = SystemLauncher(
        stack, Path("/jwt"), gateway=True, supervise=True, log_sink=logs.append, observe=False
    )
    try:
        child = await run.start_gateway()
        await run.wait_ready(NoServices(), timeout=30)  # type: ignore[arg-type]
        assert child.service == "gateway" and child.port == run.gateway_port
        assert child.supervised and child.process.returncode is None
        assert run.expected()["gateway"] == {child.instance_id}
    finally:
        await run.stop_all(grace=5)
    assert child.process.returncode is not None and run.processes == []
    assert any(f"serving {run.public_url}" in line for line in logs), logs

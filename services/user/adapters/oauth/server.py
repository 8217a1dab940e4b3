"""The authorization server's HTTPS listener, opened and closed with the service's bindings:
uvicorn on the service's own event loop, with the user service's certificate, requiring a
client certificate of the project's CA, and then only the gateway's or an operator's.

The browser never reaches this port: the gateway proxies ``/oauth2/*`` and ``/.well-known/*``
to it (finding it in etcd, where the instance registers it as its ``http`` address).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aetcd
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.user import use_cases
from services.user.adapters.oauth.app import create_app
from services.user.adapters.oauth.clients import load_clients
from services.user.adapters.oauth.issuing import Lifetimes
from services.user.adapters.oauth.storage import OAuthStorage
from services.user.domain import LOGIN_WINDOW, Passwords
from services.user.persistence import purge_expired
from services.user.ports import SigningKeys, UnitOfWorkFactory
from services.user.settings import UserSettings
from shared.auth.jwks import JwksWatcher, jwks_document
from shared.auth.tokens import TokenVerifier
from shared.tasks import PeriodicTask
from shared.tls import OPERATOR, ca_file, cert_file, key_file

log = logging.getLogger(__name__)

# Who may open a connection: the edge, and people and tools (the tests among them).
GATEWAY = "gateway"
PARTIES = frozenset({GATEWAY, OPERATOR})
PURGE_SECONDS = 600.0
STOP_SECONDS = 5.0
# How often the listener looks at its certificate files (a renewal reaches new connections).
TLS_CHECK_SECONDS = 5.0


def peer_name(cert: dict[str, Any] | None) -> str | None:
    """The name a verified client certificate carries: its first DNS SAN, else its CN (the
    order of shared.tls.identity_from_auth_context)."""
    if not cert:
        return None
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            return str(value)
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class _PartiesOnly(H11Protocol):
    """HTTP/1.1 for the parties allowed; any other certificate of the CA (a service's) is
    disconnected as soon as its handshake is done, before a byte of HTTP is read."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        name = peer_name(transport.get_extra_info("peercert"))
        if name not in PARTIES:
            log.warning("refused an OAuth2 connection from %s", name or "an unnamed peer")
            transport.close()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # SIGTERM and SIGINT are the service host's to handle, not uvicorn's


class HttpsListener:
    """uvicorn on a socket of our own (port 0 gives a free one), and its TLS context kept so
    a renewed certificate is loaded into it: new handshakes use it, no restart needed."""

    def __init__(self, app: FastAPI, settings: UserSettings) -> None:
        tls, name = settings.tls_dir, settings.service_name
        self._files = (cert_file(tls, name), key_file(tls, name), ca_file(tls))
        self._config = uvicorn.Config(
            app,
            ssl_certfile=str(self._files[0]),
            ssl_keyfile=str(self._files[1]),
            ssl_ca_certs=str(self._files[2]),
            ssl_cert_reqs=ssl.CERT_REQUIRED,
            ssl_context_factory=self._first_context,
            http=_PartiesOnly,
            lifespan="off",
            log_config=None,
            log_level="warning",  # no access log: a request line may carry a code or a state
            access_log=False,
            server_header=False,
            proxy_headers=False,  # X-Forwarded-* are read where they are meant (app.py)
        )
        self._host, self._port = settings.host, settings.oauth_port
        self._server = _Server(self._config)
        self._task: asyncio.Task[None] | None = None
        self._context: ssl.SSLContext | None = None
        self._seen: tuple[tuple[int, int], ...] | None = None
        self._renewals = PeriodicTask(
            "oauth2 tls files", self._check_files, interval=TLS_CHECK_SECONDS
        )
        self.port = 0

    def _signature(self) -> tuple[tuple[int, int], ...] | None:
        try:
            return tuple((f.stat().st_mtime_ns, f.stat().st_ino) for f in self._files)
        except OSError:
            return None

    def _first_context(
        self, config: uvicorn.Config, default: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        self._seen, self._context = self._signature(), default()
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        return self._context

    def reload_if_changed(self) -> bool:
        """Loads changed files into the live context; a half-renewed pair waits a round."""
        signature = self._signature()
        if self._context is None or signature is None or signature == self._seen:
            return False
        cert, key, ca = (str(f) for f in self._files)
        try:
            self._context.load_cert_chain(cert, key)
            self._context.load_verify_locations(ca)
        except (OSError, ssl.SSLError) as error:
            log.warning("the OAuth2 listener's TLS files are not a pair yet (%s)", error)
            return False
        self._seen = signature
        log.info("TLS files of the OAuth2 listener changed; new connections use them")
        return True

    async def _check_files(self) -> None:
        self.reload_if_changed()

    async def start(self) -> int:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # IPPROTO_TCP by name, so asyncio turns Nagle off (see gateway.server.http_listener).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="oauth2 https")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # the reason it did not start
                raise RuntimeError("the OAuth2 listener stopped before it started")
            await asyncio.sleep(0.01)
        self._renewals.start()
        return self.port

    async def stop(self) -> None:
        await self._renewals.stop()
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_SECONDS)
        except TimeoutError:
            self._server.force_exit = True
            await self._task


@contextlib.asynccontextmanager
async def authorization_server(
    settings: UserSettings,
    unit_of_work: UnitOfWorkFactory,
    keys: SigningKeys,
    passwords: Passwords,
    etcd: aetcd.Client,
    pool: Any,
) -> AsyncIterator[str]:
    """Loads the clients file, serves HTTPS; yields the address to register."""
    if settings.oauth_clients_file is not None:
        clients = await asyncio.to_thread(load_clients, settings.oauth_clients_file)
        await use_cases.replace_clients(unit_of_work, clients)
        log.info("OAuth2 clients: %s", ", ".join(c.client_id for c in clients) or "none")
    # The kit's verifier for userinfo and revocation, fed the JWKS as every service is.
    verifier = TokenVerifier([], issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    watcher = JwksWatcher(etcd, verifier.replace_keys)
    await watcher.start()
    storage = OAuthStorage(
        unit_of_work,
        keys,
        verifier,
        Lifetimes(
            access=timedelta(seconds=settings.oauth_access_token_ttl_seconds),
            refresh=timedelta(seconds=settings.oauth_refresh_token_ttl_seconds),
            session=timedelta(seconds=settings.oauth_login_session_ttl_seconds),
        ),
        settings.jwt_issuer,
    )
    app = create_app(storage, passwords, lambda: jwks_document(watcher.keys.values()))
    listener = HttpsListener(app, settings)

    async def purge() -> None:
        deleted = await purge_expired(pool, datetime.now(UTC), LOGIN_WINDOW)
        if deleted:
            log.info("purged %d expired OAuth2 rows", deleted)

    housekeeping = PeriodicTask("oauth2 purge", purge, interval=PURGE_SECONDS)
    try:
        port = await listener.start()
        housekeeping.start()
        log.info("OAuth2 authorization server on https://%s:%d", settings.host, port)
        yield f"{settings.advertise_host or settings.host}:{port}"
    finally:
        await housekeeping.stop()
        await listener.stop()
        await watcher.stop()

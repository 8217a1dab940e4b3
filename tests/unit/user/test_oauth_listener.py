"""The authorization server's HTTPS listener on loopback, with a CA made for the test (no
stack): who may connect, and a renewed certificate reaching new connections without a
restart."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from fastapi import FastAPI
from starlette.responses import PlainTextResponse

from pki.authority import ensure_authority, renew
from services.user.adapters.oauth.server import HttpsListener
from services.user.settings import UserSettings
from shared.tls import ca_file, cert_file, key_file


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = Path(tmp_path_factory.mktemp("tls"))
    ensure_authority(directory, ["user", "operator", "order", "gateway"])
    return directory


@pytest_asyncio.fixture(loop_scope="session")
async def listener(tls_dir: Path) -> AsyncIterator[HttpsListener]:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    running = HttpsListener(app, UserSettings(tls_dir=tls_dir, host="127.0.0.1", oauth_port=0))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def call(tls_dir: Path, port: int, identity: str | None) -> tuple[bytes, int]:
    """A request as ``identity`` (None: no certificate): (the answer, the server's serial)."""
    context = ssl.create_default_context(cafile=str(ca_file(tls_dir)))
    if identity is not None:
        context.load_cert_chain(cert_file(tls_dir, identity), key_file(tls_dir, identity))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="user"
    )
    try:
        serial = int(writer.get_extra_info("peercert")["serialNumber"], 16)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: user\r\nConnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 5), serial
    finally:
        writer.close()


@pytest.mark.parametrize("identity", ["gateway", "operator"])
async def test_the_gateway_and_the_operator_are_answered(tls_dir, listener, identity) -> None:
    answer, _ = await call(tls_dir, listener.port, identity)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")


@pytest.mark.parametrize("identity", ["order", None], ids=["a-service", "no-certificate"])
async def test_anyone_else_is_cut_off_unanswered(tls_dir, listener, identity) -> None:
    # TLS 1.3 finishes the client's side of the handshake before the server has judged
    # its certificate: the refusal shows as an alert or a closed connection on first read.
    try:
        answer, _ = await call(tls_dir, listener.port, identity)
    except (ConnectionError, ssl.SSLError):
        return
    assert answer == b""


async def test_a_renewed_certificate_reaches_new_connections(tls_dir, listener) -> None:
    _, before = await call(tls_dir, listener.port, "operator")
    assert not listener.reload_if_changed()  # nothing changed yet
    renewed = renew(tls_dir, "user")
    assert listener.reload_if_changed()
    _, after = await call(tls_dir, listener.port, "operator")
    assert after == renewed.serial_number != before

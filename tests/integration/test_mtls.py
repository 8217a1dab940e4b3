"""Mutual TLS on a real service port: who is refused, who is seen, and renewal without a restart."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from devstack.launcher import open_directory
from devstack.stack import Stack
from pki import authority
from services.product.main import SERVICE as PRODUCT
from shared import tls
from shared.registry.discovery import Instance
from shared.rpc.client import ServiceClients
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.integration

C = grpc.StatusCode


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def product(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningService]:
    await recreate_database(stack, "product")
    async with run_service(PRODUCT, stack, keys) as running:
        yield running


async def check(channel: grpc.aio.Channel) -> Any:
    return await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=3
    )


async def refused(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(channel)
    return caught.value


def presented_serial(address: str, tls_dir: Path, service: str) -> int:
    """The serial of the certificate a new connection is shown (asked with Python's ssl)."""
    context = ssl.create_default_context(cafile=str(tls.ca_file(tls_dir)))
    context.load_cert_chain(tls.cert_file(tls_dir, "operator"), tls.key_file(tls_dir, "operator"))
    context.set_alpn_protocols(["h2"])
    host, _, port = address.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=3) as raw,
        context.wrap_socket(raw, server_hostname=service) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def file_serial(tls_dir: Path, name: str) -> int:
    return authority.load_certificate(tls.cert_file(tls_dir, name)).serial_number


async def test_the_operator_is_served(product: RunningService) -> None:
    reply = await check(product.channel)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_plaintext_is_refused(product: RunningService) -> None:
    error = await refused(grpc.aio.insecure_channel(product.host.address))
    assert error.code() == C.UNAVAILABLE


async def test_tls_without_a_client_certificate_is_refused(
    product: RunningService, stack: Stack
) -> None:
    anonymous = grpc.ssl_channel_credentials(tls.ca_file(stack.tls_dir).read_bytes())
    channel = grpc.aio.secure_channel(
        product.host.address, anonymous, options=tls.channel_options("product")
    )
    assert (await refused(channel)).code() == C.UNAVAILABLE


async def test_a_certificate_of_another_ca_is_refused(
    product: RunningService, tmp_path: Path
) -> None:
    authority.ensure_authority(tmp_path)
    stranger = tls.ClientTLS.operator(tmp_path)
    error = await refused(stranger.channel(product.host.address, "product"))
    assert error.code() == C.UNAVAILABLE


async def test_a_server_whose_certificate_names_another_service_is_refused(
    product: RunningService, stack: Stack
) -> None:
    operator = tls.ClientTLS.operator(stack.tls_dir)
    error = await refused(operator.channel(product.host.address, "order"))
    assert error.code() == C.UNAVAILABLE
    assert "Hostname Verification" in (error.details() or "")


class ProbingHealth(HealthServicer):
    """Health that remembers who called: the identity and the client certificate's serial."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: list[tuple[str | None, int]] = []

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        pem = next(iter(context.auth_context()["x509_pem_cert"]))
        serial = x509.load_pem_x509_certificate(pem).serial_number
        self.callers.append((tls.peer_identity(context), serial))
        return await super().Check(request, context)


@pytest_asyncio.fixture(loop_scope="session")
async def probe(stack: Stack) -> AsyncIterator[tuple[str, ProbingHealth]]:
    """A tiny server with inventory's certificate, on the kit's server credentials."""
    servicer = ProbingHealth()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(stack.tls_dir, "inventory"))
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(None)


@pytest.mark.parametrize("caller", ["operator", "order", "payment"])
async def test_the_peer_identity_is_the_callers_certificate_name(
    probe: tuple[str, ProbingHealth], stack: Stack, caller: str
) -> None:
    address, servicer = probe
    async with tls.ClientTLS(stack.tls_dir, caller).channel(address, "inventory") as channel:
        await check(channel)
    assert servicer.callers == [(caller, file_serial(stack.tls_dir, caller))]


async def test_renewed_certificates_are_used_by_new_connections_without_a_restart(
    stack: Stack, keys: TestKeys, tmp_path: Path
) -> None:
    # Its own CA dir, so renewing here never touches the stack's files.
    tls_dir = tmp_path / "tls"
    authority.ensure_authority(tls_dir)
    await recreate_database(stack, "product")
    probe = ProbingHealth()
    probe_server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(probe, probe_server)
    probe_port = probe_server.add_secure_port(
        "127.0.0.1:0", tls.server_credentials(tls_dir, "inventory")
    )
    await probe_server.start()
    probe_instance = Instance("inventory", "probe", f"127.0.0.1:{probe_port}", "", 0)
    async with (
        run_service(PRODUCT, stack, keys, tls_dir=tls_dir) as running,
        open_directory(stack) as directory,
    ):
        clients = ServiceClients(directory, tls.ClientTLS.operator(tls_dir, check_seconds=0))
        product = Instance("product", "p", running.host.address, "", 0)
        try:
            old_product = file_serial(tls_dir, "product")
            old_operator = file_serial(tls_dir, "operator")
            assert (
                await asyncio.to_thread(presented_serial, running.host.address, tls_dir, "product")
                == old_product
            )
            await check(clients.channel(product))
            await check(clients.channel(probe_instance))
            assert probe.callers[-1] == ("operator", old_operator)
            before = clients.channel(product)

            authority.renew(tls_dir, "product")
            authority.renew(tls_dir, "operator")
            new_product = file_serial(tls_dir, "product")
            new_operator = file_serial(tls_dir, "operator")
            assert new_product != old_product and new_operator != old_operator

            # Server side: a new connection sees the new certificate, same process.
            assert (
                await asyncio.to_thread(presented_serial, running.host.address, tls_dir, "product")
                == new_product
            )
            # Client side: new channels, presenting the operator's new certificate.
            after = clients.channel(product)
            assert after is not before
            assert (await check(after)).status == health_pb2.HealthCheckResponse.SERVING
            await check(clients.channel(probe_instance))
            assert probe.callers[-1] == ("operator", new_operator)
            # A connection made before the renewal keeps working.
            assert (await check(running.channel)).status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await clients.close()
            await probe_server.stop(None)


def test_make_bench_tls_measures_both_ports() -> None:
    """docs/security.md's `make bench-tls`, with a budget a test can afford (ghz is real)."""
    import re
    import subprocess

    from devstack.launcher import REPO_ROOT

    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "bench-tls",
            "BENCH_TLS_ARGS=--seconds 0.5 --rounds 1 --handshake-seconds 0.5",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(
        r"mTLS/plaintext health Check throughput: (\d+\.\d+) .*; (\d+\.\d+) with a new connection",
        result.stdout,
    )
    assert summary is not None, result.stdout
    assert float(summary.group(1)) > 0 and float(summary.group(2)) > 0

"""Real clients nobody here wrote, grpcurl and ghz, against the running system.

Both find methods through server reflection, over mutual TLS with the operator
certificate. The grpcurl/ghz block of docs/contracts.md is run exactly as written (only the
addresses and the profile's TLS directory are swapped for the test system's),
so the commands a reader copies cannot drift from what works.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.launcher import DEV_PORTS, REPO_ROOT, SERVICES
from devstack.stack import Stack
from shared.auth.identity import Role
from tests.e2e.conftest import RunningSystem, running_system
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e

TOOLS = REPO_ROOT / ".stack" / "tools" / "bin"
PAGE = REPO_ROOT / "docs" / "contracts.md"
MARKER = "tests/e2e/test_real_clients.py"
FULL_NAMES = {
    "user": "shop.user.v1.UserService",
    "product": "shop.product.v1.ProductService",
    "inventory": "shop.inventory.v1.InventoryService",
    "payment": "shop.payment.v1.PaymentService",
    "order": "shop.order.v1.OrderService",
}


def documented_block() -> str:
    """The fenced block that follows the page's marker comment."""
    text = PAGE.read_text()
    after = text[text.index(MARKER) :]
    match = re.search(r"```bash\n(.*?)```", after, re.DOTALL)
    assert match is not None, f"{PAGE.name} lost its tested grpcurl block"
    return match.group(1)


def run(script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{TOOLS}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, (
            f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningSystem]:
    """One instance of each service, so each documented address stands for exactly one."""
    async with running_system(stack, keys) as running:
        yield running


def addresses(system: RunningSystem) -> dict[str, str]:
    return {s: system.directory.instances(s)[0].address for s in SERVICES}


def tls_flags(stack: Stack) -> str:
    tls = Path(".stack") / stack.profile.name / "tls"
    return f"-cacert {tls}/ca.pem -cert {tls}/operator.pem -key {tls}/operator-key.pem"


def for_this_system(script: str, system: RunningSystem) -> str:
    for service, address in addresses(system).items():
        script = script.replace(f"127.0.0.1:{DEV_PORTS[service]}", address)
    return script.replace(".stack/dev/", f".stack/{system.stack.profile.name}/")


async def test_the_documented_block_runs_as_written(system: RunningSystem) -> None:
    script = documented_block()
    for service in SERVICES:  # the block must still name the addresses `make run` uses
        if service != "user":
            assert f"127.0.0.1:{DEV_PORTS[service]}" in script, service
    result = await asyncio.to_thread(run, for_this_system(script, system))
    out = result.stdout
    assert FULL_NAMES["user"] in out and "grpc.reflection.v1.ServerReflection" in out
    assert "rpc WatchOrder ( .shop.order.v1.WatchOrderRequest ) returns ( stream" in out
    assert '"sku": "DEMO-MUG"' in out  # GetStock
    assert '"balance"' in out  # GetBalance
    assert "ORDER_STATUS_PENDING" in out  # PlaceOrder
    assert '"status": "SERVING"' in out
    assert re.search(r"\[OK\]\s+2000 responses", out), out  # ghz: every Check answered OK


@pytest.mark.parametrize("service", SERVICES)
async def test_list_and_describe_through_reflection_on_every_service(
    system: RunningSystem, service: str
) -> None:
    address, tls = addresses(system)[service], tls_flags(system.stack)
    listed = await asyncio.to_thread(run, f"grpcurl {tls} -authority {service} {address} list")
    assert set(listed.stdout.split()) == {
        FULL_NAMES[service],
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    described = await asyncio.to_thread(
        run, f"grpcurl {tls} -authority {service} {address} describe"
    )
    assert f"{FULL_NAMES[service]} is a service:" in described.stdout
    assert "grpc.reflection.v1.ServerReflection is a service:" in described.stdout
    # v1alpha too, for older clients (grpcurl falls back to it by itself).
    alpha = await asyncio.to_thread(
        run,
        f'grpcurl {tls} -authority {service} -d \'{{"list_services": ""}}\' {address} '
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    )
    assert FULL_NAMES[service] in alpha.stdout


@pytest.mark.parametrize("service", SERVICES)
async def test_plaintext_and_a_wrong_name_are_refused(system: RunningSystem, service: str) -> None:
    address, tls = addresses(system)[service], tls_flags(system.stack)
    plaintext = await asyncio.to_thread(
        run, f"grpcurl -plaintext -max-time 5 {address} list", check=False
    )
    assert plaintext.returncode != 0
    other = "order" if service != "order" else "user"
    wrong_name = await asyncio.to_thread(
        run, f"grpcurl {tls} -authority {other} -max-time 5 {address} list", check=False
    )
    assert wrong_name.returncode != 0
    assert "certificate" in wrong_name.stderr.lower()


async def test_admin_calls_take_the_operator_certificate_not_a_services(
    system: RunningSystem,
) -> None:
    """The party layer of the access policy, from a real client: an admin token is
    not enough from the order service's certificate."""
    address = addresses(system)["product"]
    tls = Path(".stack") / system.stack.profile.name / "tls"
    token = system.keys.token(Role.ADMIN)
    request = (
        '{"sku": "PARTY-1", "title": "Party", "price": {"amount_minor": 100, "currency": "USD"},'
        ' "status": "PRODUCT_STATUS_ACTIVE"}'
    )

    def create_as(party: str) -> subprocess.CompletedProcess[str]:
        return run(
            f"grpcurl -cacert {tls}/ca.pem -cert {tls}/{party}.pem -key {tls}/{party}-key.pem"
            f" -authority product -H 'authorization: Bearer {token}' -d '{request}'"
            f" {address} shop.product.v1.ProductService/CreateProduct",
            check=False,
        )

    refused = await asyncio.to_thread(create_as, "order")
    assert refused.returncode != 0 and "PermissionDenied" in refused.stderr, refused.stderr
    assert "operator" in refused.stderr
    created = await asyncio.to_thread(create_as, "operator")
    assert created.returncode == 0, created.stderr
    assert '"sku": "PARTY-1"' in created.stdout

"""Signing keys rotate under load, against the whole system (docs/security.md).

A short load run (the `mixed` scenario: product, order with its saga, payment);
the admin rotates the signing key twice during it, at 1/3 and 2/3 of the measured
window. The run must see no UNAUTHENTICATED at all: tokens of the retired keys keep
verifying, and a token signed by a new key verifies everywhere at once. Then
`shopctl keys rotate` (docs/security.md's command, as a subprocess) rotates once more, a
new login is signed by the newest key, and once the token lifetime (short here)
plus the leeway has passed since the first rotation, the first key is gone from the
JWKS: its tokens, even one cached as good earlier, are refused.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
import jwt
import pytest
import pytest_asyncio

from devstack.launcher import REPO_ROOT
from devstack.stack import Stack
from loadgen.buyers import sign_in_buyers
from loadgen.dev_target import stack_target
from loadgen.runner import run_scenario
from loadgen.settings import MIXED, ScenarioSettings
from ops.seed import ADMIN, CUSTOMER
from ops.shop_client import DEADLINE, ShopClient
from shared.auth.jwks import parse_jwks, read_jwks
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.e2e.conftest import RunningSystem, running_system
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.e2e

# Long enough for every buyer token (signed before the run) to outlive the run, short
# enough that the first key is removed well within a minute of the first rotation.
TOKEN_TTL_SECONDS = 40
LEEWAY_SECONDS = 1.0
USERS = 8
RUN = ScenarioSettings(MIXED, rate=30, duration=9, users=USERS, baseline_duration=1)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningSystem]:
    env = {
        "SHOP_USER_TOKEN_TTL_SECONDS": str(TOKEN_TTL_SECONDS),
        "SHOP_USER_SIGNING_KEY_LEEWAY_SECONDS": str(LEEWAY_SECONDS),
    }
    async with running_system(stack, keys, extra_env=env) as running:
        yield running


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def get_balance(system: RunningSystem, token: str) -> None:
    await system.clients.call(
        "payment",
        payment_pb2_grpc.PaymentServiceStub,
        lambda s: s.GetBalance(
            payment_pb2.GetBalanceRequest(),
            timeout=DEADLINE,
            metadata=(("authorization", f"Bearer {token}"),),
        ),
    )


@dataclass
class Rotations:
    kids: list[str] = field(default_factory=list)  # the signing key after each rotation
    asked: list[float] = field(default_factory=list)  # monotonic: before each rotation call
    at: list[float] = field(default_factory=list)  # monotonic: after it returned
    offsets: list[float] = field(default_factory=list)  # seconds into the measured window
    fresh_logins_ok: int = 0


async def rotate_during(
    system: RunningSystem, measuring: asyncio.Event, rotations: Rotations
) -> None:
    """At 1/3 and 2/3 of the measured window: rotate, then prove a token of the new key
    (a fresh login of the demo customer) is accepted by another service right away."""
    admin = ShopClient(system.clients)
    await admin.login(*ADMIN)
    await measuring.wait()
    started = time.monotonic()
    for fraction in (1 / 3, 2 / 3):
        await asyncio.sleep(max(0.0, started + fraction * RUN.duration - time.monotonic()))
        rotations.asked.append(time.monotonic())
        keys = await admin.rotate_signing_key()
        rotations.at.append(time.monotonic())
        rotations.offsets.append(round(rotations.at[-1] - started, 2))
        signing = [k.kid for k in keys if k.signing]
        assert len(signing) == 1 and keys[0].signing
        rotations.kids.append(signing[0])
        customer = ShopClient(system.clients)
        login = await customer.login(*CUSTOMER)
        assert kid_of(login.access_token) == signing[0]
        await get_balance(system, login.access_token)
        rotations.fresh_logins_ok += 1


async def shopctl(stack: Stack, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.shopctl",
        "--tls-dir",
        str(stack.tls_dir),
        *args,
        "--etcd",
        stack.etcd_endpoint,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()
    return out.decode()


async def published_kids(stack: Stack) -> set[str]:
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    try:
        raw = await read_jwks(client)
    finally:
        await client.close()
    return set(parse_jwks(raw)) if raw is not None else set()


async def test_rotating_twice_under_load_refuses_nothing_and_then_removes_the_old_key(
    system: RunningSystem, stack: Stack, keys: TestKeys, tmp_path: Path
) -> None:
    first_kid = keys.kid  # the user service imported the test key as its bootstrap key
    assert await published_kids(stack) == {first_kid}
    # A token of the first key that outlives the key itself, verified (and cached) now.
    lasting_old_token = keys.token(ttl=timedelta(minutes=30))
    await get_balance(system, lasting_old_token)

    target = stack_target(stack, system.clients, system.directory)
    buyers = await sign_in_buyers(system.clients, USERS)
    assert {kid_of(b.token) for b in buyers} == {first_kid}

    measuring = asyncio.Event()

    def say(line: str) -> None:
        if ": measuring at" in line:
            measuring.set()

    rotations = Rotations()
    rotator = asyncio.create_task(rotate_during(system, measuring, rotations))
    result = await run_scenario(RUN, target, buyers, tmp_path, profile="ci", say=say)
    await rotator
    report = result.report

    # The run: nothing refused, although the key changed twice under it.
    calls = sum(figures["count"] for figures in report["rpcs"].values())
    unauthenticated = sum(
        figures["errors"].get("UNAUTHENTICATED", 0) for figures in report["rpcs"].values()
    )
    assert len(rotations.kids) == 2 and len(set(rotations.kids) | {first_kid}) == 3
    assert all(0 < offset < RUN.duration for offset in rotations.offsets), rotations.offsets
    assert unauthenticated == 0, report["rpcs"]
    assert report["ok"], result.summary
    assert calls > 0.9 * RUN.arrivals

    # Once more through the command line docs/security.md shows; then a new login is signed by it.
    out = await shopctl(stack, "keys", "rotate")
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["KID", "CREATED"]
    third_kid = lines[1].split()[0]
    assert lines[1].endswith("signing")
    assert {line.split()[0] for line in lines[1:]} == {third_kid, *rotations.kids, first_kid}
    listed = await shopctl(stack, "keys", "list")
    assert listed.strip().splitlines()[1].split()[0] == third_kid
    fresh = await ShopClient(system.clients).login(*CUSTOMER)
    assert kid_of(fresh.access_token) == third_kid

    # The first key goes after the token lifetime plus leeway, counted from the rotation.
    deadline = rotations.at[0] + TOKEN_TTL_SECONDS + LEEWAY_SECONDS + 15
    while first_kid in await published_kids(stack):
        assert time.monotonic() < deadline, "the first key was never removed"
        await asyncio.sleep(0.2)
    removed_after = time.monotonic() - rotations.at[0]
    assert time.monotonic() - rotations.asked[0] >= TOKEN_TTL_SECONDS + LEEWAY_SECONDS
    await asyncio.sleep(0.5)  # the JWKS watch reaches every service

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await get_balance(system, lasting_old_token)  # cached as good before the run
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown key" in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as refused_new:
        await get_balance(system, keys.token())  # even one signed just now
    assert refused_new.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await get_balance(system, fresh.access_token)  # the newest key's token is accepted

    print(
        "\nrotation under load:"
        f" {calls} calls in {RUN.duration:g}s at {RUN.rate:g}/s,"
        f" UNAUTHENTICATED={unauthenticated},"
        f" rotations at {rotations.offsets} s into the window,"
        f" fresh logins after each rotation accepted={rotations.fresh_logins_ok},"
        f" kids {first_kid} -> {rotations.kids[0]} -> {rotations.kids[1]}"
        f" -> {third_kid} (shopctl),"
        f" first key removed {removed_after:.1f}s after its rotation call returned"
        f" (token ttl {TOKEN_TTL_SECONDS}s + leeway {LEEWAY_SECONDS:g}s),"
        f" its token then UNAUTHENTICATED ({refused.value.details()})"
    )

"""The fuzz suite in ``make test``: a short fixed-seed run, proof that each property
can fail, and ``make fuzz`` itself with a tiny budget.

The long run is ``make fuzz`` (tests/fuzz/__main__.py), on its own stack.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from devstack.launcher import REPO_ROOT
from devstack.stack import Stack
from services.product.grpc_api import ProductServicer
from shared.auth.identity import Role
from shared.errors import AlreadyExists, InvalidArgument
from shop.product.v1 import product_pb2
from shop.user.v1 import user_pb2
from tests.fuzz import rest_cases
from tests.fuzz import rpcs as rpc_list
from tests.fuzz.harness import (
    Caller,
    Exercise,
    Fuzzer,
    Outcome,
    violations,
)
from tests.fuzz.strategies import FuzzRequest, MessageStrategies, Vocabulary
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.integration

SEED = 20_240_607
EXAMPLES_PER_RPC = 30
C = grpc.StatusCode


async def test_every_rpc_keeps_the_three_properties(stack: Stack, keys: TestKeys) -> None:
    """The short profile: a few dozen requests per RPC, a fixed seed, all five services."""
    started = time.monotonic()
    async with Fuzzer(stack, keys) as fuzzer:
        rpcs = fuzzer.rpcs()
        failures = await fuzzer.run(examples=EXAMPLES_PER_RPC, seed=SEED)
        report = fuzzer.report()
    print(f"\n{report}\n({time.monotonic() - started:.0f} s)")
    assert not failures, "\n\n".join(f.render() for f in failures)
    assert {r.label for r in rpcs} == set(fuzzer.stats), "an RPC was never fuzzed"
    assert {r.service for r in rpcs} == {"user", "product", "inventory", "payment", "order"}
    assert any(r.server_streaming for r in rpcs), "WatchOrder (a stream) is fuzzed too"
    # The fuzzer got past validation: real calls succeeded on most RPCs.
    succeeded = [label for label, s in fuzzer.stats.items() if s.codes["OK"]]
    assert len(succeeded) >= len(rpcs) * 3 // 4, report


def test_the_rpcs_come_from_the_descriptors() -> None:
    found = {r.label: r for r in rpc_list.discover()}
    for service in rpc_list.services():
        for method in service.methods:
            label = f"{service.full_name.split('.')[1]}.{method.name}"
            assert found[label].input is method.input_type
    assert found["order.WatchOrder"].server_streaming


@settings(max_examples=100, database=None, deadline=None)
@given(st.data())
def test_the_strategies_cover_every_field(data: st.DataObject) -> None:
    """Every request type yields messages that serialize; a new field needs no code."""
    strategies = MessageStrategies(Vocabulary(strings={"email": ["a@example.com"]}))
    rpc = data.draw(st.sampled_from(rpc_list.discover()))
    request = data.draw(strategies.requests(rpc.input))
    assert isinstance(request.wire(), bytes)
    assert request.describe()


def test_the_strategies_reach_the_adversarial_values() -> None:
    strategies = MessageStrategies(
        Vocabulary(strings={"email": ["a@example.com"], "password": ["pw-123456"]})
    )
    seen: list[FuzzRequest] = []

    @settings(max_examples=400, database=None, deadline=None)
    @given(strategies.requests(user_pb2.RegisterRequest.DESCRIPTOR))
    def collect(request: FuzzRequest) -> None:
        seen.append(request)

    collect()
    emails = [r.message.email for r in seen]  # type: ignore[attr-defined]
    assert any("\x00" in e for e in emails)
    assert any(len(e) >= 1000 for e in emails)
    assert any(any(ord(c) > 0xFFFF for c in e) for e in emails)
    assert any("\u200f" in e or "\u202e" in e for e in emails)
    assert "a@example.com" in emails
    assert any(r.tail is not None for r in seen)


# --- the properties can fail ----------------------------------------------------------------


def _exercise(code: grpc.StatusCode, details: str = "", **changes: Any) -> Exercise:
    rpc = next(r for r in rpc_list.discover() if r.label == "product.GetProduct")
    request = FuzzRequest(product_pb2.GetProductRequest(product_id=changes.pop("product_id", "")))
    fields: dict[str, Any] = {
        "before": {"public.products": (1, "a")},
        "after": {"public.products": (1, "a")},
        "serving": True,
        **changes,
    }
    outcome = Outcome(code, details, "", 0, 0.01)
    return Exercise(rpc, Caller("none", "none"), request, outcome, **fields)


def _props(ex: Exercise) -> set[str]:
    return {v.prop for v in violations(ex)}


def test_the_checks_flag_each_property() -> None:
    assert _props(_exercise(C.NOT_FOUND, "product x does not exist")) == set()
    assert _props(_exercise(C.UNKNOWN, "boom")) == {"status"}
    assert _props(_exercise(C.INTERNAL, "internal error; error id 1234")) == {"status"}
    assert _props(_exercise(C.DEADLINE_EXCEEDED)) == {"status"}  # a unary call that hung
    for leaked in (
        "Unexpected <class 'KeyError'>",
        "CharacterNotInRepertoireError: invalid byte sequence",
        'Traceback (most recent call last):\n  File "x.py", line 3',
        'duplicate key value violates unique constraint "products_sku_key"',
        "SELECT * FROM products WHERE sku = $1",
    ):
        assert "leak" in _props(_exercise(C.INVALID_ARGUMENT, leaked)), leaked
    # The caller's own string echoed back is not a leak.
    echoed = _exercise(
        C.INVALID_ARGUMENT, "must be a UUID, got 'SELECT KeyError'", product_id="SELECT KeyError"
    )
    assert _props(echoed) == set()
    wrote = {"public.products": (2, "b")}
    assert _props(_exercise(C.INVALID_ARGUMENT, "no", after=wrote)) == {"rows"}
    assert _props(_exercise(C.OK, after=wrote)) == set()  # accepted: writes are its business
    assert _props(_exercise(C.OK, serving=False)) == {"health"}


async def test_a_snapshot_sees_every_write(stack: Stack, keys: TestKeys) -> None:
    async with Fuzzer(stack, keys, services=["product"]) as fuzzer:
        database = fuzzer.databases["product"]
        before = await database.snapshot()
        assert "public.products" in before and "public.outbox" in before
        conn = await asyncpg.connect(database.dsn)
        try:
            await conn.execute(
                "INSERT INTO processed_events (consumer, event_id) VALUES ('t', $1)", uuid.uuid4()
            )
            inserted = await database.snapshot()
            await conn.execute("UPDATE processed_events SET consumer = 'u'")
            updated = await database.snapshot()
            await conn.execute("CREATE TABLE stray (x int)")
            created = await database.snapshot()
        finally:
            await conn.close()
    assert inserted["public.processed_events"][0] == before["public.processed_events"][0] + 1
    assert updated["public.processed_events"] != inserted["public.processed_events"]
    assert updated["public.processed_events"][0] == inserted["public.processed_events"][0]
    assert "public.stray" in created and "public.stray" not in updated


async def test_the_fuzzer_finds_sabotaged_handlers(
    stack: Stack, keys: TestKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handlers broken on purpose, one per property: each is found, shrunk and reported."""
    dsn = stack.pg_dsn("shop_product")

    async def writes_then_rejects(self: Any, request: Any, context: Any) -> Any:
        conn = await asyncpg.connect(dsn)
        try:  # a write outside the request's transaction: a half-done rejection
            await conn.execute(
                "INSERT INTO processed_events (consumer, event_id) VALUES ('sabotage', $1)",
                uuid.uuid4(),
            )
        finally:
            await conn.close()
        raise InvalidArgument("product_id", "rejected, after writing")

    async def crashes(self: Any, request: Any, context: Any) -> Any:
        raise RuntimeError("a bug")

    async def leaks_sql(self: Any, request: Any, context: Any) -> Any:
        raise AlreadyExists('duplicate key value violates unique constraint "products_sku_key"')

    monkeypatch.setattr(ProductServicer, "GetProduct", writes_then_rejects)
    monkeypatch.setattr(ProductServicer, "BatchGetProducts", crashes)
    monkeypatch.setattr(ProductServicer, "ListProducts", leaks_sql)
    async with Fuzzer(stack, keys, services=["product"]) as fuzzer:
        chosen = [r for r in fuzzer.rpcs() if r.name != "CreateProduct"]
        failures = await fuzzer.run(examples=15, seed=SEED, rpcs=chosen)
        # And a service that stops answering SERVING.
        host = fuzzer.running["product"].host
        await host._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        rpc = next(r for r in chosen if r.name == "UpdateProduct")
        caller = Caller("admin-nobody", "token", Role.ADMIN, uuid.UUID(int=7))
        ex = await fuzzer.exercise(rpc, caller, FuzzRequest(product_pb2.UpdateProductRequest()))
        await host._health.set("", health_pb2.HealthCheckResponse.SERVING)
    found = {(f.rpc, f.prop) for f in failures}
    assert ("product.GetProduct", "rows") in found, found
    assert ("product.BatchGetProducts", "status") in found, found
    assert ("product.ListProducts", "leak") in found, found
    assert not any(f.rpc == "product.UpdateProduct" for f in failures), failures
    assert "health" in {v.prop for v in violations(ex)}
    rows = next(f for f in failures if f.prop == "rows")
    assert "public.processed_events: " in rows.render() and "request (text format)" in rows.render()


# --- make fuzz --------------------------------------------------------------------------------


def test_make_fuzz_runs_and_reports(stack: Stack) -> None:
    """docs/testing.md's `make fuzz`, with a tiny budget, on this session's stack."""
    env = {
        **os.environ,
        "FUZZ_MINUTES": "0",
        "FUZZ_EXAMPLES": "3",
        "FUZZ_SEED": "7",
        "FUZZ_PROFILE": stack.profile.name,
    }
    done = subprocess.run(
        ["make", "fuzz"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=420
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "seed 7" in out and "every property held" in out
    for rpc in rpc_list.discover():
        assert f"\n{rpc.label} " in out, f"{rpc.label} missing from the report:\n{out}"
    # The edge too: every route of the OpenAPI document, the OAuth2 endpoints, the audit.
    for label in [*map(rest_cases.label_of, rest_cases.operations()), "POST /oauth2/token"]:
        assert f"\n{label} " in out, f"{label} missing from the report:\n{out}"
    assert "audit: ok" in out

"""The edge fuzzer in ``make test``: a short fixed-seed run over every REST route and OAuth2
endpoint, proof that each property can fail, and the fuzzer finding sabotaged routes.

The long run is ``make fuzz`` (tests/fuzz/__main__.py), on its own stack.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from devstack.stack import Stack
from gateway.backends import GrpcBackends
from gateway.carts import PostgresCartStore
from tests.fuzz import rest_cases
from tests.fuzz.edge_checks import Answer, Registered, Rows, check
from tests.fuzz.edge_run import run_edge
from tests.fuzz.http_call import HttpCall
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.integration

SEED = 20_251_207
EXAMPLES = 5
PROBLEM = [("content-type", "application/problem+json")]
CLIENTS = Registered(
    "http://localhost:8080", {"shop-cli": ["http://127.0.0.1:8976/callback"], "loadgen": []}
)


async def test_every_route_and_endpoint_keeps_the_properties(stack: Stack, keys: TestKeys) -> None:
    """The short profile: a few requests per route and endpoint, a fixed seed."""
    started = time.monotonic()
    run = await run_edge(stack, keys, examples=EXAMPLES, seed=SEED)
    print(f"\n{run.report}\n{run.audit}\n({time.monotonic() - started:.0f} s)")
    assert not run.failures, "\n\n".join(f.render() for f in run.failures)
    documented = {rest_cases.label_of(op) for op in rest_cases.operations()}
    assert documented <= set(run.seen), "a route of docs/openapi.json was never fuzzed"
    for endpoint in ("/oauth2/token", "/oauth2/authorize", "/oauth2/login", "/.well-known/"):
        assert any(endpoint in label for label in run.seen), endpoint
    # Past the edge: some requests of most routes were accepted, not all refused.
    served = [
        label for label, codes in run.seen.items() if any(c < "400" for c in codes if c.isdigit())
    ]
    assert len(served) >= len(run.seen) // 2, run.report


# --- the properties can fail ------------------------------------------------------------------


def _call(path: str = "/api/v1/orders", method: str = "GET", **changes: Any) -> HttpCall:
    return HttpCall(f"{method} {path}", method, path, **changes)


def _problem(status: int, **extra: Any) -> bytes:
    body = {"type": "https://shop.local/problems/x", "title": "X", "status": status, **extra}
    return json.dumps(body).encode()


def _props(call: HttpCall, answer: Answer, rows: Rows | None = None) -> set[str]:
    return {v.prop for v in check(call, answer, rows or Rows({}, {}), CLIENTS)}


def test_the_checks_flag_each_property() -> None:
    ok = Answer(404, PROBLEM, _problem(404), 0.01)
    assert _props(_call(), ok) == set()
    assert _props(_call(), Answer(500, PROBLEM, _problem(500), 0.01)) == {"status"}
    assert _props(_call(), Answer(0, [], b"", 30.0, timed_out=True)) == {"status"}
    assert _props(_call(), Answer(404, [("content-type", "text/plain")], b"nope", 0.0)) == {
        "problem"
    }
    assert _props(_call(), Answer(422, PROBLEM, _problem(400), 0.0)) == {"problem"}
    for leaked in (
        "Traceback (most recent call last)",
        "JSONDecodeError: Expecting value",
        'duplicate key value violates unique constraint "orders_pkey"',
        "SELECT * FROM orders WHERE user_id = $1",
        "asyncpg.exceptions.DataError",
    ):
        assert "leak" in _props(_call(), Answer(422, PROBLEM, _problem(422, detail=leaked), 0)), (
            leaked
        )
    # The request's own text echoed back (HTML-escaped too) is not a leak.
    echoed = _call("/oauth2/login", "POST", body=b"email=SELECT+%27KeyError%27")
    page = b"<p>SELECT &#x27;KeyError&#x27; is not an email</p>"
    assert _props(echoed, Answer(401, [("content-type", "text/html")], page, 0.0)) == set()


def test_a_refusal_that_writes_is_flagged_but_a_kept_answer_is_not() -> None:
    before = {"gateway:public.cart_items": (1, "a"), "gateway:public.idempotency_keys": (0, "")}
    wrote = {**before, "gateway:public.cart_items": (2, "b")}
    kept = {**before, "gateway:public.idempotency_keys": (1, "c")}
    refused = Answer(404, PROBLEM, _problem(404), 0.0)
    assert _props(_call(), refused, Rows(before, wrote)) == {"rows"}
    assert _props(_call(), refused, Rows(before, kept, kept=[("done", 404)])) == set()
    assert _props(_call(), refused, Rows(before, kept, kept=[("in_flight", None)])) == {"rows"}
    assert _props(_call(), refused, Rows(before, kept)) == {"rows"}
    accepted = Answer(201, [("content-type", "application/json")], b"{}", 0.0)
    assert _props(_call(), accepted, Rows(before, wrote)) == set()
    assert _props(_call(), accepted, Rows(before, before, in_flight=1)) == {"rows"}


def test_the_oauth_checks() -> None:
    token = _call("/oauth2/token", "POST")
    as_json = [("content-type", "application/json")]
    assert _props(token, Answer(400, as_json, b'{"error": "invalid_grant"}', 0.0)) == set()
    assert _props(token, Answer(400, as_json, b'{"error": "mismatching_state"}', 0.0)) == {"oauth"}
    assert _props(token, Answer(400, [("content-type", "text/html")], b"<p>no</p>", 0.0)) == {
        "oauth"
    }
    assert _props(token, Answer(413, PROBLEM, _problem(413), 0.0)) == set()  # the edge's limit
    query = (("client_id", "shop-cli"), ("redirect_uri", "https://evil.example/cb"))
    authorize = _call("/oauth2/authorize", query=query)

    def redirect(to: str) -> Answer:
        return Answer(302, [("location", to)], b"", 0.0)

    assert _props(authorize, redirect("https://evil.example/cb?error=x")) == {"oauth"}
    assert _props(authorize, redirect("http://127.0.0.1:8976/callback?code=1")) == set()
    assert _props(authorize, redirect("http://localhost:8080/oauth2/authorize?x")) == set()
    logout = _call("/oauth2/logout", query=(("client_id", "shop-cli"),))
    assert _props(logout, Answer(303, [("location", "http://127.0.0.1:8976/")], b"", 0.0)) == set()
    assert _props(logout, Answer(303, [("location", "http://127.0.0.1:8976/x")], b"", 0)) == {
        "oauth"
    }
    userinfo = _call("/oauth2/userinfo")
    assert _props(userinfo, Answer(401, as_json, b"{}", 0.0)) == {"oauth"}
    challenged = [*as_json, ("www-authenticate", 'Bearer error="invalid_token"')]
    assert _props(userinfo, Answer(401, challenged, b"{}", 0.0)) == set()


async def test_the_fuzzer_finds_sabotaged_routes(
    stack: Stack, keys: TestKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route that crashes and one that writes before it refuses: each found and shrunk."""

    async def crashes(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    async def writes_then_refuses(self: Any, user_id: uuid.UUID, sku: str) -> bool:
        await self._pool.execute(
            "INSERT INTO cart_items (user_id, sku, product_id, quantity) VALUES ($1, $2, $3, 1)"
            " ON CONFLICT DO NOTHING",
            user_id,
            f"SABOTAGE-{uuid.uuid4().hex[:8]}",
            uuid.uuid4(),
        )
        return False  # "no such line": a 404, after a write

    monkeypatch.setattr(GrpcBackends, "get_stock", crashes)
    monkeypatch.setattr(PostgresCartStore, "remove", writes_then_refuses)
    routes = ("GET /api/v1/stock/{sku}", "DELETE /api/v1/cart/items/{sku}")
    run = await run_edge(stack, keys, examples=15, seed=SEED, routes=routes)
    found = {(f.rpc, f.prop) for f in run.failures}
    assert ("GET /api/v1/stock/{sku}", "status") in found, found
    assert ("DELETE /api/v1/cart/items/{sku}", "rows") in found, found
    assert ("after the run", "half-written") in found, found  # carts naming no product
    rows = next(f for f in run.failures if f.prop == "rows")
    assert "gateway:public.cart_items" in rows.render()

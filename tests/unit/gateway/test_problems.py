"""The one table from gRPC status (and error reason) to HTTP problem, over every code."""

from __future__ import annotations

import re

import grpc
import pytest

from devstack.config import REPO_ROOT
from gateway.problems import (
    INTERNAL,
    MEDIA_TYPE,
    RULES,
    TYPE_BASE,
    as_problem,
    from_domain_error,
    from_rpc_error,
    rule_for,
)
from shared.errors import reason_name
from shared.registry.discovery import NoInstanceAvailable
from shop.common.v1.error_reason_pb2 import ErrorReason
from tests.unit.gateway.fakes import FakeGateway, rpc_error

C = grpc.StatusCode
# What each failure means over HTTP; a new grpc.StatusCode fails here until it has a row.
EXPECTED = {
    C.OK: 500,
    C.CANCELLED: 503,
    C.UNKNOWN: 500,
    C.INVALID_ARGUMENT: 422,
    C.DEADLINE_EXCEEDED: 504,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.PERMISSION_DENIED: 403,
    C.RESOURCE_EXHAUSTED: 429,
    C.FAILED_PRECONDITION: 409,
    C.ABORTED: 409,
    C.OUT_OF_RANGE: 400,
    C.UNIMPLEMENTED: 501,
    C.INTERNAL: 500,
    C.UNAVAILABLE: 503,
    C.DATA_LOSS: 500,
    C.UNAUTHENTICATED: 401,
}
SECRET = "psycopg.errors.UndefinedTable: SELECT * FROM wallets; Traceback (most recent call)"


def test_every_status_code_has_a_row() -> None:
    assert set(EXPECTED) == set(grpc.StatusCode)
    for code, status in EXPECTED.items():
        assert rule_for(code, None).status == status, code
        assert (code, None) in RULES


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_every_code_is_a_problem_that_names_no_internals(code: grpc.StatusCode) -> None:
    problem = from_rpc_error(rpc_error(code, SECRET, error_reason="X"))
    body = problem.body("/api/v1/x")
    assert body["status"] == EXPECTED[code]
    assert body["type"].startswith(TYPE_BASE)
    if problem.rule is INTERNAL:
        assert SECRET not in str(body)
        assert body["detail"].startswith("internal error; quote error id")
        assert body["error_id"] in body["detail"]


@pytest.mark.parametrize("reason", list(ErrorReason.values()), ids=ErrorReason.Name)
def test_every_reason_of_the_contract_maps(reason: int) -> None:
    name = reason_name(reason)  # type: ignore[arg-type]
    for code in grpc.StatusCode:
        assert rule_for(code, name).status >= 400


def test_a_reason_refines_its_code() -> None:
    circuit = from_rpc_error(rpc_error(C.UNAVAILABLE, "circuit open", error_reason="CIRCUIT_OPEN"))
    assert circuit.rule.type == TYPE_BASE + "circuit-open"
    assert circuit.headers["Retry-After"] == "1"
    plain = from_rpc_error(rpc_error(C.UNAVAILABLE, "down", error_reason="UNAVAILABLE"))
    assert plain.rule.type == TYPE_BASE + "unavailable"
    assert plain.reason == "UNAVAILABLE"


def test_rate_limited_says_when_to_retry() -> None:
    problem = from_rpc_error(
        rpc_error(
            C.RESOURCE_EXHAUSTED, "slow down", error_reason="RATE_LIMITED", retry_after_ms="1200"
        )
    )
    assert problem.status == 429
    assert problem.headers["Retry-After"] == "2"


def test_a_bad_argument_names_its_field() -> None:
    problem = from_rpc_error(
        rpc_error(
            C.INVALID_ARGUMENT,
            "items: too many",
            error_reason="INVALID_ARGUMENT",
            error_field="items",
        )
    )
    assert problem.status == 422
    assert problem.errors == [{"field": "items", "detail": "items: too many"}]


def test_an_unauthenticated_answer_challenges() -> None:
    problem = from_rpc_error(rpc_error(C.UNAUTHENTICATED, "token expired"))
    assert problem.headers["WWW-Authenticate"].startswith("Bearer")


def test_no_instance_is_a_503() -> None:
    problem = from_domain_error(NoInstanceAvailable("no live instance of order is registered"))
    assert (problem.status, problem.reason) == (503, "NO_INSTANCE")
    assert problem.rule.type == TYPE_BASE + "no-instance"


def test_a_bug_is_no_problem_of_the_table() -> None:
    assert as_problem(RuntimeError("x")) is None


async def test_an_upstream_internal_error_reaches_the_client_as_a_plain_500(
    gw: FakeGateway,
) -> None:
    gw.backends.fail("ListProducts", rpc_error(C.INTERNAL, SECRET, error_reason="INTERNAL"))
    reply = await gw.client.get("/api/v1/products")
    assert reply.status_code == 500
    assert reply.headers["content-type"] == MEDIA_TYPE
    body = reply.json()
    assert SECRET not in reply.text
    assert body["title"] == "Internal error"
    assert len(body["trace_id"]) == 32
    assert body["error_id"]


async def test_a_bug_in_the_gateway_is_a_500_problem_without_a_stack(gw: FakeGateway) -> None:
    gw.backends.fail("ListProducts", RuntimeError(SECRET))
    reply = await gw.client.get("/api/v1/products")
    assert reply.status_code == 500
    assert reply.headers["content-type"] == MEDIA_TYPE
    assert SECRET not in reply.text and "RuntimeError" not in reply.text
    assert reply.json()["trace_id"]
    assert reply.headers["x-content-type-options"] == "nosniff"  # headers even on a crash


def test_the_manuals_table_is_the_codes_table() -> None:
    page = (REPO_ROOT / "docs" / "gateway.md").read_text()
    rows = re.findall(r"^\| ([A-Z_]+) \| ([A-Z_]+|any) \| (\d{3}) \| `([a-z-]+)` \|$", page, re.M)
    documented = {
        (code, None if reason == "any" else reason): (int(status), slug)
        for code, reason, status, slug in rows
    }
    assert documented == {
        (code.name, reason): (rule.status, rule.slug) for (code, reason), rule in RULES.items()
    }

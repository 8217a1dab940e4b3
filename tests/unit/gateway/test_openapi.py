"""The OpenAPI document: committed as generated, and every route documented as the
gateway answers it (a summary, its problems, the Idempotency-Key of a POST)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.config import REPO_ROOT
from gateway.app import create_app
from gateway.settings import GatewaySettings

COMMITTED = REPO_ROOT / "docs" / "openapi.json"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(GatewaySettings()).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_the_committed_document_is_the_generated_one(document: dict[str, Any]) -> None:
    generated = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert COMMITTED.read_text() == generated, "docs/openapi.json is stale: run `make openapi`"


def test_the_api_is_all_there(document: dict[str, Any]) -> None:
    routes = {(method, path) for method, path, _ in operations(document)}
    assert {
        ("GET", "/api/v1/products"),
        ("GET", "/api/v1/products/{product_id}"),
        ("GET", "/api/v1/stock/{sku}"),
        ("GET", "/api/v1/cart"),
        ("PUT", "/api/v1/cart"),
        ("DELETE", "/api/v1/cart"),
        ("PUT", "/api/v1/cart/items/{sku}"),
        ("DELETE", "/api/v1/cart/items/{sku}"),
        ("POST", "/api/v1/orders"),
        ("GET", "/api/v1/orders"),
        ("GET", "/api/v1/orders/{order_id}"),
        ("POST", "/api/v1/orders/{order_id}/cancel"),
        ("GET", "/api/v1/orders/{order_id}/events"),
        ("GET", "/api/v1/wallet"),
        ("POST", "/api/v1/wallet/top-ups"),
        ("POST", "/api/v1/admin/products"),
        ("PATCH", "/api/v1/admin/products/{product_id}"),
        ("PUT", "/api/v1/admin/stock/{sku}"),
        ("GET", "/healthz/live"),
        ("GET", "/healthz/ready"),
    } <= routes


def test_every_route_has_a_summary_and_its_problems(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        where = f"{method} {path}"
        assert operation.get("summary"), f"{where} has no summary"
        if path == "/healthz/live":
            continue  # answers 200 while the process runs, and nothing else
        problems = {
            status: answer for status, answer in operation["responses"].items() if status[0] in "45"
        }
        assert problems, f"{where} declares no error response"
        for status, answer in problems.items():
            schema = answer["content"][PROBLEM]["schema"]
            assert schema == {"$ref": "#/components/schemas/ProblemBody"}, f"{where} {status}"
        if path.startswith("/api/"):
            assert {"413", "429", "500"} <= set(problems), where


def test_every_post_declares_its_idempotency_key(document: dict[str, Any]) -> None:
    posts = [(path, op) for method, path, op in operations(document) if method == "POST"]
    assert len(posts) == 4
    for path, operation in posts:
        headers = [p for p in operation.get("parameters", []) if p["in"] == "header"]
        key = [p for p in headers if p["name"] == "Idempotency-Key"]
        assert key and key[0]["required"] is True, path
        assert "400" in operation["responses"], path


def test_scoped_routes_name_their_scope_and_the_bearer_scheme(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for method, path, operation in operations(document):
        if "401" in operation["responses"] and "403" in operation["responses"]:
            assert "Scope `" in operation.get("description", ""), f"{method} {path}"
            assert operation.get("security") == [{"bearer": []}], f"{method} {path}"

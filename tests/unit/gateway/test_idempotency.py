"""Idempotency-Key on every POST: one order however often it is sent, another body under
the same key refused, a concurrent duplicate told to wait, a failure a retry may fix
not remembered."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from tests.unit.gateway.fakes import FakeGateway, rpc_error

C = grpc.StatusCode
ORDERS = "/api/v1/orders"


def order_body(gw: FakeGateway, quantity: int = 1) -> dict[str, object]:
    product = next(iter(gw.backends.products.values()), None) or gw.backends.add_product("MUG")
    return {"items": [{"product_id": product.product_id, "quantity": quantity}]}


def with_key(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (ORDERS, None),
        ("/api/v1/wallet/top-ups", {"amount": {"amount_minor": 100, "currency": "USD"}}),
        ("/api/v1/orders/8a1f1b9c-0000-0000-0000-000000000000/cancel", {}),
        (
            "/api/v1/admin/products",
            {"sku": "NEW-1", "title": "New", "price": {"amount_minor": 5, "currency": "USD"}},
        ),
    ],
)
async def test_every_post_needs_a_key(gw: FakeGateway, path: str, body: object) -> None:
    reply = await gw.client.post(path, json=body or order_body(gw), headers=gw.admin())
    assert reply.status_code == 400, reply.text
    assert reply.json()["type"] == "https://shop.local/problems/idempotency-key-missing"
    assert [c for c, _ in gw.backends.calls if c != "GetProduct"] == []


@pytest.mark.parametrize("key", ["x" * 65, "tab\there", "   "])
async def test_a_malformed_key_is_a_400(gw: FakeGateway, key: str) -> None:
    reply = await gw.client.post(ORDERS, json=order_body(gw), headers=with_key(gw.customer(), key))
    assert reply.status_code == 400
    assert gw.backends.placed == []


async def test_a_replay_gets_the_first_answer_and_places_one_order(gw: FakeGateway) -> None:
    headers = with_key(gw.customer(uuid.uuid4()), "checkout-1")
    first = await gw.client.post(ORDERS, json=order_body(gw), headers=headers)
    again = await gw.client.post(ORDERS, json=order_body(gw), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert gw.backends.placed == ["checkout-1"]  # the key reaches the order service too


async def test_the_same_key_with_another_body_is_refused(gw: FakeGateway) -> None:
    headers = with_key(gw.customer(uuid.uuid4()), "checkout-2")
    assert (await gw.client.post(ORDERS, json=order_body(gw), headers=headers)).status_code == 201
    reply = await gw.client.post(ORDERS, json=order_body(gw, quantity=2), headers=headers)
    assert reply.status_code == 422
    assert reply.json()["type"] == "https://shop.local/problems/idempotency-key-reused"
    assert len(gw.backends.placed) == 1


async def test_keys_are_per_user(gw: FakeGateway) -> None:
    body = order_body(gw)
    for user in (uuid.uuid4(), uuid.uuid4()):
        reply = await gw.client.post(ORDERS, json=body, headers=with_key(gw.customer(user), "k"))
        assert reply.status_code == 201
    assert len(gw.backends.placed) == 2


async def test_a_duplicate_while_the_first_runs_is_told_to_retry(gw: FakeGateway) -> None:
    gw.backends.delays["PlaceOrder"] = 0.3
    headers = with_key(gw.customer(uuid.uuid4()), "double-click")
    first = asyncio.create_task(gw.client.post(ORDERS, json=order_body(gw), headers=headers))
    await asyncio.sleep(0.1)
    second = await gw.client.post(ORDERS, json=order_body(gw), headers=headers)
    assert second.status_code == 409
    assert second.headers["retry-after"] == "1"
    assert second.json()["type"] == "https://shop.local/problems/idempotency-key-in-flight"
    assert (await first).status_code == 201
    assert len(gw.backends.placed) == 1


async def test_a_failure_a_retry_may_fix_is_not_remembered(gw: FakeGateway) -> None:
    headers = with_key(gw.customer(uuid.uuid4()), "retry-me")
    gw.backends.fail("PlaceOrder", rpc_error(C.UNAVAILABLE, "order is down"))
    assert (await gw.client.post(ORDERS, json=order_body(gw), headers=headers)).status_code == 503
    del gw.backends.failures["PlaceOrder"]
    reply = await gw.client.post(ORDERS, json=order_body(gw), headers=headers)
    assert reply.status_code == 201
    assert "idempotent-replayed" not in reply.headers


async def test_a_refusal_is_remembered_like_a_success(gw: FakeGateway) -> None:
    headers = with_key(gw.customer(uuid.uuid4()), "refused")
    gw.backends.fail(
        "PlaceOrder",
        rpc_error(C.FAILED_PRECONDITION, "not for sale", error_reason="FAILED_PRECONDITION"),
    )
    first = await gw.client.post(ORDERS, json=order_body(gw), headers=headers)
    del gw.backends.failures["PlaceOrder"]
    again = await gw.client.post(ORDERS, json=order_body(gw), headers=headers)
    assert first.status_code == again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["detail"] == first.json()["detail"] == "not for sale"
    assert again.headers["idempotent-replayed"] == "true"


async def test_top_ups_are_idempotent_too(gw: FakeGateway) -> None:
    headers = with_key(gw.customer(uuid.uuid4()), "top-up-1")
    body = {"amount": {"amount_minor": 2500, "currency": "USD"}}
    first = await gw.client.post("/api/v1/wallet/top-ups", json=body, headers=headers)
    again = await gw.client.post("/api/v1/wallet/top-ups", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["balance"] == {"amount_minor": 7500, "currency": "USD"}
    assert gw.backends.placed == ["top-up-1"]

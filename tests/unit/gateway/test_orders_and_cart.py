"""Orders, the cart, the wallet and the admin routes, over fake services."""

from __future__ import annotations

import uuid

import grpc

from shop.order.v1 import order_pb2
from shop.product.v1 import product_pb2
from tests.unit.gateway.fakes import FakeGateway, rpc_error

C = grpc.StatusCode


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def test_an_order_is_placed_and_read_back(gw: FakeGateway) -> None:
    product = gw.backends.add_product("MUG")
    user = gw.customer(uuid.uuid4())
    reply = await gw.client.post(
        "/api/v1/orders",
        json={"items": [{"product_id": product.product_id, "quantity": 2}]},
        headers={**user, **key()},
    )
    assert reply.status_code == 201
    order = reply.json()
    assert order["status"] == "pending"
    assert order["total"] == {"amount_minor": 1998, "currency": "USD"}
    assert reply.headers["location"] == f"/api/v1/orders/{order['order_id']}"
    again = await gw.client.get(reply.headers["location"], headers=user)
    assert again.json() == order


async def test_an_order_body_is_checked_before_any_service(gw: FakeGateway) -> None:
    user = {**gw.customer(), **key()}
    cases = [
        {},
        {"items": []},
        {"items": [{"product_id": "not-a-uuid", "quantity": 1}]},
        {"items": [{"product_id": str(uuid.uuid4()), "quantity": 0}]},
        {"items": [{"product_id": str(uuid.uuid4()), "quantity": 1}], "from_cart": True},
        {"items": [{"product_id": str(uuid.uuid4()), "quantity": 1}], "coupon": "FREE"},
    ]
    for body in cases:
        reply = await gw.client.post("/api/v1/orders", json=body, headers=user)
        assert reply.status_code == 422, (body, reply.text)
        assert reply.json()["errors"], body
        assert "not-a-uuid" not in reply.text  # never the input echoed back
    assert gw.backends.calls == []


async def test_an_order_from_the_cart_empties_it(gw: FakeGateway) -> None:
    mug, cap = gw.backends.add_product("MUG"), gw.backends.add_product("CAP")
    user = gw.customer(uuid.uuid4())
    for product, quantity in ((mug, 1), (cap, 3)):
        reply = await gw.client.put(
            f"/api/v1/cart/items/{product.sku}",
            json={"product_id": product.product_id, "quantity": quantity},
            headers=user,
        )
        assert reply.status_code == 200, reply.text
    cart = (await gw.client.get("/api/v1/cart", headers=user)).json()
    assert [(i["sku"], i["quantity"], i["product"]["title"]) for i in cart["items"]] == [
        ("MUG", 1, "A thing"),
        ("CAP", 3, "A thing"),
    ]
    reply = await gw.client.post(
        "/api/v1/orders", json={"from_cart": True}, headers={**user, **key()}
    )
    assert reply.status_code == 201
    assert [(i["sku"], i["quantity"]) for i in reply.json()["items"]] == [("MUG", 1), ("CAP", 3)]
    assert (await gw.client.get("/api/v1/cart", headers=user)).json() == {"items": []}
    empty = await gw.client.post(
        "/api/v1/orders", json={"from_cart": True}, headers={**user, **key()}
    )
    assert empty.status_code == 422 and empty.json()["detail"] == "the cart is empty"


async def test_a_cart_line_must_name_a_product_on_sale_by_its_sku(gw: FakeGateway) -> None:
    mug = gw.backends.add_product("MUG")
    draft = gw.backends.add_product("OLD", status=product_pb2.PRODUCT_STATUS_ARCHIVED)
    user = gw.customer(uuid.uuid4())
    cases = [
        ("CAP", mug.product_id, "another SKU"),
        ("OLD", draft.product_id, "not for sale"),
        ("MUG", str(uuid.uuid4()), "no such product"),
    ]
    for sku, product_id, why in cases:
        reply = await gw.client.put(
            f"/api/v1/cart/items/{sku}",
            json={"product_id": product_id, "quantity": 1},
            headers=user,
        )
        assert reply.status_code == 422 and why in reply.json()["detail"], reply.text


async def test_the_cart_is_replaced_emptied_and_trimmed(gw: FakeGateway) -> None:
    mug, cap = gw.backends.add_product("MUG"), gw.backends.add_product("CAP")
    user = gw.customer(uuid.uuid4())
    lines = [
        {"sku": "MUG", "product_id": mug.product_id, "quantity": 2},
        {"sku": "CAP", "product_id": cap.product_id, "quantity": 1},
    ]
    reply = await gw.client.put("/api/v1/cart", json={"items": lines}, headers=user)
    assert [i["sku"] for i in reply.json()["items"]] == ["MUG", "CAP"]
    twice = await gw.client.put("/api/v1/cart", json={"items": lines + lines[:1]}, headers=user)
    assert twice.status_code == 422
    assert (await gw.client.delete("/api/v1/cart/items/MUG", headers=user)).status_code == 204
    assert (await gw.client.delete("/api/v1/cart/items/MUG", headers=user)).status_code == 404
    assert (await gw.client.delete("/api/v1/cart", headers=user)).status_code == 204
    assert (await gw.client.get("/api/v1/cart", headers=user)).json() == {"items": []}


async def test_a_cart_line_whose_product_is_gone_shows_null(gw: FakeGateway) -> None:
    mug = gw.backends.add_product("MUG")
    user = gw.customer(uuid.uuid4())
    await gw.client.put(
        "/api/v1/cart/items/MUG", json={"product_id": mug.product_id, "quantity": 1}, headers=user
    )
    gw.backends.fail("GetProduct", rpc_error(C.UNAVAILABLE, "product is down"))
    cart = (await gw.client.get("/api/v1/cart", headers=user)).json()
    assert cart["items"] == [
        {"sku": "MUG", "product_id": mug.product_id, "quantity": 1, "product": None}
    ]


async def test_orders_are_paged_with_links(gw: FakeGateway) -> None:
    for _ in range(3):
        order = order_pb2.Order(order_id=str(uuid.uuid4()), status=order_pb2.ORDER_STATUS_CONFIRMED)
        gw.backends.orders[order.order_id] = order
    user = gw.customer()
    first = await gw.client.get("/api/v1/orders?page_size=2", headers=user)
    assert len(first.json()["orders"]) == 2
    link = first.headers["link"]
    second = await gw.client.get(link[1 : link.index(">")], headers=user)
    assert len(second.json()["orders"]) == 1 and second.json()["next_page_token"] is None
    assert {o["status"] for o in second.json()["orders"]} == {"confirmed"}


async def test_cancel_answers_the_order_and_conflicts_map_to_409(gw: FakeGateway) -> None:
    order = order_pb2.Order(order_id=str(uuid.uuid4()), status=order_pb2.ORDER_STATUS_PENDING)
    gw.backends.orders[order.order_id] = order
    user = gw.customer()
    path = f"/api/v1/orders/{order.order_id}/cancel"
    reply = await gw.client.post(path, headers={**user, **key()})
    assert reply.status_code == 200 and reply.json()["status"] == "cancelled"
    gw.backends.fail(
        "CancelOrder",
        rpc_error(C.FAILED_PRECONDITION, "a confirmed order cannot be cancelled"),
    )
    refused = await gw.client.post(path, headers={**user, **key()})
    assert refused.status_code == 409
    assert refused.json()["type"] == "https://shop.local/problems/failed-precondition"


async def test_the_wallet(gw: FakeGateway) -> None:
    reply = await gw.client.get("/api/v1/wallet", headers=gw.customer())
    assert reply.json() == {
        "balance": {"amount_minor": 5000, "currency": "USD"},
        "updated_at": None,
    }
    bad = await gw.client.post(
        "/api/v1/wallet/top-ups",
        json={"amount": {"amount_minor": 0, "currency": "usd"}},
        headers={**gw.customer(), **key()},
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"amount.currency"}


async def test_the_admin_routes(gw: FakeGateway) -> None:
    admin = gw.admin()
    created = await gw.client.post(
        "/api/v1/admin/products",
        json={"sku": "NEW-1", "title": "New", "price": {"amount_minor": 500, "currency": "USD"}},
        headers={**admin, **key()},
    )
    assert created.status_code == 201
    product_id = created.json()["product_id"]
    assert created.headers["location"] == f"/api/v1/products/{product_id}"
    patched = await gw.client.patch(
        f"/api/v1/admin/products/{product_id}", json={"title": "Newer"}, headers=admin
    )
    assert patched.json()["title"] == "Newer"
    stock = await gw.client.put("/api/v1/admin/stock/NEW-1", json={"available": 7}, headers=admin)
    assert stock.json()["available"] == 7 and stock.json()["total_received"] == 0
    methods = [method for method, _ in gw.backends.calls]
    assert methods == ["CreateProduct", "UpdateProduct", "SetStock"]

"""The public catalog: pages and their links, search, and a product page that survives
its inventory."""

from __future__ import annotations

import grpc
import pytest

from gateway.problems import from_domain_error
from shared.registry.discovery import NoInstanceAvailable
from shared.rpc.status import local_error
from shop.inventory.v1 import inventory_pb2
from shop.product.v1 import product_pb2
from tests.unit.gateway.fakes import FakeGateway, rpc_error

C = grpc.StatusCode


def catalog(gw: FakeGateway, count: int) -> list[product_pb2.Product]:
    return [gw.backends.add_product(f"SKU-{n:03}", f"Thing {n:03}") for n in range(count)]


async def test_pages_follow_the_catalogs_tokens_and_link_the_next(gw: FakeGateway) -> None:
    made = catalog(gw, 5)
    gw.backends.add_product("DRAFT-1", status=product_pb2.PRODUCT_STATUS_DRAFT)
    seen, url, links = [], "/api/v1/products?page_size=2", 0
    while url:
        reply = await gw.client.get(url)
        assert reply.status_code == 200
        body = reply.json()
        seen += [p["sku"] for p in body["products"]]
        if body["next_page_token"]:
            link = reply.headers["link"]
            assert link.endswith('>; rel="next"')
            url, links = link[1 : link.index(">")], links + 1
            assert "page_size=2" in url and f"page_token={body['next_page_token']}" in url
        else:
            assert "link" not in reply.headers
            url = ""
    assert seen == [p.sku for p in made]  # the draft is not on sale
    assert links == 2


@pytest.mark.parametrize("query", ["page_size=0", "page_size=101", "page_size=x"])
async def test_a_bad_page_size_is_a_422_naming_it(gw: FakeGateway, query: str) -> None:
    reply = await gw.client.get(f"/api/v1/products?{query}")
    assert reply.status_code == 422
    body = reply.json()
    assert body["type"] == "https://shop.local/problems/validation-error"
    assert body["errors"][0]["field"] == "page_size" and body["errors"][0]["in"] == "query"


async def test_a_search_pages_through_the_catalogs_matches(gw: FakeGateway) -> None:
    for n in range(250):
        gw.backends.add_product(f"S-{n:03}", "Red mug" if n % 10 == 0 else "Blue cap")
    found, token = [], ""
    for _ in range(10):
        reply = await gw.client.get(
            "/api/v1/products", params={"q": "red", "page_size": 7, "page_token": token}
        )
        body = reply.json()
        assert len(body["products"]) <= 7
        found += [p["sku"] for p in body["products"]]
        token = body["next_page_token"]
        if not token:
            break
    assert found == [f"S-{n:03}" for n in range(0, 250, 10)]


async def test_a_query_over_100_characters_is_a_422(gw: FakeGateway) -> None:
    reply = await gw.client.get("/api/v1/products", params={"q": "x" * 101})
    assert reply.status_code == 422
    assert reply.json()["errors"][0]["field"] == "q"


async def test_a_product_page_shows_its_stock(gw: FakeGateway) -> None:
    product = gw.backends.add_product("MUG")
    gw.backends.stock["MUG"] = inventory_pb2.Stock(sku="MUG", available=4)
    reply = await gw.client.get(f"/api/v1/products/{product.product_id}")
    assert reply.status_code == 200
    body = reply.json()
    assert body["price"] == {"amount_minor": 999, "currency": "USD"}
    assert body["stock"] == {"status": "in_stock", "available": 4}


async def test_a_product_never_stocked_is_out_of_stock(gw: FakeGateway) -> None:
    product = gw.backends.add_product("NEW")
    reply = await gw.client.get(f"/api/v1/products/{product.product_id}")
    assert reply.json()["stock"] == {"status": "out_of_stock", "available": 0}


@pytest.mark.parametrize(
    "failure",
    [
        rpc_error(C.UNAVAILABLE, "inventory is down", error_reason="UNAVAILABLE"),
        local_error(C.UNAVAILABLE, "CIRCUIT_OPEN", "circuit open for inventory; retry in 3 s"),
        local_error(C.DEADLINE_EXCEEDED, "DEADLINE_BUDGET_SPENT", "too late"),
        NoInstanceAvailable("no live instance of inventory is registered"),
        rpc_error(C.INTERNAL, "boom", error_reason="INTERNAL"),
    ],
    ids=["down", "breaker-open", "deadline", "no-instance", "internal"],
)
async def test_a_product_page_survives_its_inventory(
    gw: FakeGateway, failure: BaseException
) -> None:
    product = gw.backends.add_product("MUG")
    gw.backends.fail("GetStock", failure)
    reply = await gw.client.get(f"/api/v1/products/{product.product_id}")
    assert reply.status_code == 200, reply.text
    assert reply.json()["stock"] == {"status": "unknown", "available": None}
    assert reply.json()["title"] == "A thing"


async def test_a_slow_inventory_is_waited_for_only_so_long(gw: FakeGateway) -> None:
    product = gw.backends.add_product("MUG")
    gw.backends.stock["MUG"] = inventory_pb2.Stock(sku="MUG", available=4)
    gw.gateway.settings.stock_timeout_seconds = 0.05
    gw.backends.delays["GetStock"] = 5.0
    reply = await gw.client.get(f"/api/v1/products/{product.product_id}")
    assert reply.status_code == 200
    assert reply.json()["stock"]["status"] == "unknown"


async def test_the_product_itself_failing_is_the_pages_problem(gw: FakeGateway) -> None:
    gw.backends.fail("GetProduct", from_domain_error(NoInstanceAvailable("no product")))
    reply = await gw.client.get("/api/v1/products/8a1f1b9c-0000-0000-0000-000000000000")
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "1"


async def test_a_product_not_on_sale_is_hidden_but_from_its_admins(gw: FakeGateway) -> None:
    draft = gw.backends.add_product("DRAFT", status=product_pb2.PRODUCT_STATUS_DRAFT)
    assert (await gw.client.get(f"/api/v1/products/{draft.product_id}")).status_code == 404
    reply = await gw.client.get(f"/api/v1/products/{draft.product_id}", headers=gw.admin())
    assert reply.status_code == 200 and reply.json()["status"] == "draft"


async def test_stock_of_a_sku(gw: FakeGateway) -> None:
    gw.backends.stock["MUG"] = inventory_pb2.Stock(sku="MUG", available=0, reserved=3)
    reply = await gw.client.get("/api/v1/stock/MUG")
    assert reply.json() == {
        "sku": "MUG",
        "available": 0,
        "status": "out_of_stock",
        "updated_at": None,
    }
    assert (await gw.client.get("/api/v1/stock/NOPE")).status_code == 404
    assert (await gw.client.get("/api/v1/stock/%20bad")).status_code == 422

"""The storefront's pages on fakes: what a visitor sees, signed in or not, and how a
page refuses (sign-in first, a CSRF token that does not match, a service down)."""

from __future__ import annotations

import re
import time
import uuid

import grpc
import pytest

from gateway.storefront import csrf
from gateway.storefront.login import safe_next
from gateway.storefront.web_session import COOKIE
from shared.auth.identity import Role
from shop.order.v1 import order_pb2
from tests.unit.gateway.fakes import FakeGateway, rpc_error

USER = uuid.uuid4()


async def sign_in(gw: FakeGateway, role: Role = Role.CUSTOMER, **token: object) -> str:
    """A signed-in session, as /auth/callback leaves it; returns its CSRF token."""
    secret = csrf.new_secret()
    session = await gw.gateway.sessions.create(
        {
            "access_token": gw.keys.token(role, user_id=USER, **token),  # type: ignore[arg-type]
            "refresh_token": "r",
            "expires_at": time.time() + 3600,
            "email": "demo@shop.local",
            "csrf": secret,
        }
    )
    gw.client.cookies.set(COOKIE, session.id)
    return secret


async def test_the_catalog_is_public_and_searchable(gw: FakeGateway) -> None:
    gw.backends.add_product("MUG-1", "Saga mug")
    gw.backends.add_product("TEE-1", "Reference T-shirt")
    page = await gw.client.get("/", params={"q": "mug"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Saga mug" in page.text and "Reference T-shirt" not in page.text
    assert 'id="login"' in page.text  # not signed in
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_a_product_page_renders_with_the_stock_unknown_when_inventory_fails(
    gw: FakeGateway,
) -> None:
    product = gw.backends.add_product("MUG-1", "Saga mug")
    gw.backends.fail("GetStock", rpc_error(grpc.StatusCode.UNAVAILABLE, "inventory down"))
    page = await gw.client.get(f"/products/{product.product_id}")
    assert page.status_code == 200
    assert "Saga mug" in page.text and "Stock unknown" in page.text
    assert "Traceback" not in page.text and "UNAVAILABLE" not in page.text


async def test_a_catalog_down_is_a_friendly_503_page(gw: FakeGateway) -> None:
    gw.backends.fail("ListProducts", rpc_error(grpc.StatusCode.UNAVAILABLE, "product down"))
    page = await gw.client.get("/")
    assert page.status_code == 503
    assert "not answering" in page.text or "cannot reach" in page.text
    assert "AioRpcError" not in page.text and "StatusCode" not in page.text


@pytest.mark.parametrize("path", ["/cart", "/orders", "/wallet", "/checkout", "/admin"])
async def test_a_signed_out_visitor_is_sent_to_sign_in_and_back(gw: FakeGateway, path: str) -> None:
    reply = await gw.client.get(path)
    assert reply.status_code == 303
    assert reply.headers["location"] == f"/auth/login?next={path}"


async def test_sign_in_starts_the_code_flow_with_pkce_and_state(gw: FakeGateway) -> None:
    from gateway.oauth_proxy import OAuthProxy

    gw.gateway.oauth = OAuthProxy.__new__(OAuthProxy)  # only start_login runs here
    reply = await gw.client.get("/auth/login", params={"next": "//evil.example/x"})
    assert reply.status_code == 303
    location = reply.headers["location"]
    assert location.startswith("/oauth2/authorize?")
    for part in ("response_type=code", "code_challenge_method=S256", "state=", "nonce="):
        assert part in location
    cookie = reply.headers["set-cookie"]
    assert COOKIE in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    session_id = re.search(f"{COOKIE}=([^;]+)", cookie)
    assert session_id is not None
    session = await gw.gateway.sessions.get(session_id.group(1))
    assert session is not None and session.data["login"]["next"] == "/"


async def test_a_callback_whose_state_differs_is_refused(gw: FakeGateway) -> None:
    from gateway.oauth_proxy import OAuthProxy

    gw.gateway.oauth = OAuthProxy.__new__(OAuthProxy)
    await gw.client.get("/auth/login")
    reply = await gw.client.get("/auth/callback", params={"code": "c", "state": "forged"})
    assert reply.status_code == 400 and "did not match" in reply.text


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("/orders", "/orders"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        (None, "/"),
        ("orders", "/"),
    ],
)
def test_only_a_path_of_this_site_is_a_place_to_return_to(asked: str | None, kept: str) -> None:
    assert safe_next(asked) == kept


async def test_a_post_without_the_sessions_csrf_token_is_refused(gw: FakeGateway) -> None:
    product = gw.backends.add_product("MUG-1", "Saga mug")
    secret = await sign_in(gw)
    form = {"product_id": product.product_id, "quantity": "1"}
    refused = await gw.client.post("/cart/items", data={**form, "csrf_token": "guess"})
    assert refused.status_code == 403
    assert await gw.gateway.carts.lines(USER) == []
    accepted = await gw.client.post("/cart/items", data={**form, "csrf_token": secret})
    assert accepted.status_code == 303 and accepted.headers["location"] == "/cart"
    assert [line.sku for line in await gw.gateway.carts.lines(USER)] == ["MUG-1"]


async def test_checkout_places_the_cart_once_and_empties_it(gw: FakeGateway) -> None:
    product = gw.backends.add_product("MUG-1", "Saga mug")
    secret = await sign_in(gw)
    await gw.client.post(
        "/cart/items",
        data={"product_id": product.product_id, "quantity": "2", "csrf_token": secret},
    )
    checkout = await gw.client.get("/checkout")
    key = re.search(r'name="idempotency_key" value="([^"]+)"', checkout.text)
    assert checkout.status_code == 200 and key is not None
    placed = await gw.client.post(
        "/checkout", data={"csrf_token": secret, "idempotency_key": key.group(1)}
    )
    assert placed.status_code == 303 and placed.headers["location"].startswith("/orders/")
    assert gw.backends.placed == [key.group(1)]
    assert await gw.gateway.carts.lines(USER) == []


async def test_the_live_order_status_is_html_fragments_over_sse_until_final(
    gw: FakeGateway,
) -> None:
    product = gw.backends.add_product("MUG-1", "Saga mug")
    order = await gw.backends.place_order((), [(product.product_id, 1)], "k")
    gw.backends.updates[order.order_id] = [order_pb2.ORDER_STATUS_CONFIRMED]
    await sign_in(gw)
    reply = await gw.client.get(f"/orders/{order.order_id}/live")
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = [block for block in reply.text.split("\n\n") if block.strip()]
    names = [block.splitlines()[0] for block in events]
    assert names == ["event: status", "event: status", "event: done"]
    assert "Pending" in events[0] and "Confirmed" in events[1]
    assert all(line.startswith(("event:", "data:")) for b in events for line in b.splitlines())


async def test_the_admin_page_needs_the_admin_role_and_its_scopes(gw: FakeGateway) -> None:
    gw.backends.add_product("MUG-1", "Saga mug")
    await sign_in(gw)
    assert (await gw.client.get("/admin")).status_code == 403
    await sign_in(gw, Role.ADMIN, scopes=["catalog:admin"])  # stock:admin missing
    assert (await gw.client.get("/admin")).status_code == 403
    await sign_in(gw, Role.ADMIN)
    page = await gw.client.get("/admin")
    assert page.status_code == 200 and "MUG-1" in page.text


async def test_a_top_up_takes_an_exact_amount_only(gw: FakeGateway) -> None:
    secret = await sign_in(gw)
    bad = await gw.client.post(
        "/wallet/top-ups", data={"amount": "1.001", "idempotency_key": "k", "csrf_token": secret}
    )
    assert bad.status_code == 400 and gw.backends.placed == []
    good = await gw.client.post(
        "/wallet/top-ups", data={"amount": "12.50", "idempotency_key": "k", "csrf_token": secret}
    )
    assert good.status_code == 303 and gw.backends.placed == ["k"]


async def test_an_order_page_lists_its_items_and_its_steps(gw: FakeGateway) -> None:
    product = gw.backends.add_product("MUG-1", "Saga mug")
    order = await gw.backends.place_order((), [(product.product_id, 3)], "k")
    await sign_in(gw)
    page = await gw.client.get(f"/orders/{order.order_id}")
    assert page.status_code == 200
    assert "MUG-1" in page.text and "Pending" in page.text and 'sse-connect="' in page.text
    history = await gw.client.get("/orders")
    assert history.status_code == 200 and order.order_id[:8] in history.text
